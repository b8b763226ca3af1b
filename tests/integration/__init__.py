"""Tests against a real ComfyUI server (set COMFYUI_PATH; see tests/integration/conftest.py)."""
