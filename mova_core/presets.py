"""Configurations of the released MOVA-360p and MOVA-720p checkpoints (spec section 1-9).

Both releases share every network shape; they differ in training resolution only. The values
describe the official ``*/config.json`` files, so a real folder can be checked (or a model built on
the meta device) without reading it.
"""

from __future__ import annotations

from .config import BridgeConfig, ConfigBase, DACConfig, DiTConfig, SchedulerConfig, UMT5Config, VideoVAEConfig

TEXT_DIM = 4096

VIDEO_DIT = DiTConfig(dim=5120, in_dim=36, ffn_dim=13824, out_dim=16, text_dim=TEXT_DIM, freq_dim=256, num_heads=40,
                      num_layers=40, patch_size=(1, 2, 2))
AUDIO_DIT = DiTConfig(dim=1536, in_dim=128, ffn_dim=8960, out_dim=128, text_dim=TEXT_DIM, freq_dim=256, num_heads=12,
                      num_layers=30, patch_size=(1,), vae_type="dac", require_vae_embedding=False)
BRIDGE = BridgeConfig(visual_layers=40, audio_layers=30, visual_hidden_dim=5120, audio_hidden_dim=1536, audio_fps=50.0,
                      head_dim=128, interaction_strategy="full", apply_cross_rope=True)
VIDEO_VAE = VideoVAEConfig()  # the Wan 2.1 defaults
AUDIO_VAE = DACConfig(encoder_dim=128, encoder_rates=(2, 3, 4, 5, 8), latent_dim=128, decoder_dim=2048,
                      decoder_rates=(8, 5, 4, 3, 2), sample_rate=48000, continuous=True, use_weight_norm=False)
TEXT_ENCODER = UMT5Config(vocab_size=256384, d_model=TEXT_DIM, d_kv=64, d_ff=10240, num_layers=24, num_heads=64)
SCHEDULER = SchedulerConfig(shift=5.0, extra_one_step=True)  # shift and extra_one_step: LIKELY (spec 9.1)

MOVA: dict[str, ConfigBase] = {
    "video_dit": VIDEO_DIT, "video_dit_2": VIDEO_DIT, "audio_dit": AUDIO_DIT, "dual_tower_bridge": BRIDGE,
    "video_vae": VIDEO_VAE, "audio_vae": AUDIO_VAE, "text_encoder": TEXT_ENCODER, "scheduler": SCHEDULER,
}
PRESETS: dict[str, dict[str, ConfigBase]] = {"MOVA-360p": MOVA, "MOVA-720p": MOVA}
