"""MOVA joint video+audio diffusion in pure PyTorch (no ComfyUI imports)."""
