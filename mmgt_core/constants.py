"""Facts every MMGT stage shares, each once: frame rate, encoder sample rate, SMGA window, latent grid, motion
modules, keypoint visibility.

Facts only one module and its callers need stay in that module (e.g. ``EDGE_FEATURE_DIM`` in
:mod:`mmgt_core.audio.edge_features`, ``VAE_SCALING`` in :mod:`mmgt_core.video.vae_codec`); a value a loaded model's
config holds is read from that config where the model is at hand.
"""

from __future__ import annotations

VIDEO_FPS = 25
"""Frame rate of every MMGT feature and video (one feature row per video frame)."""

ENCODER_SAMPLE_RATE = 16000
"""Rate WavLM and wav2vec2 take (the official code loads both through ``librosa.load(sr=16000)``)."""

SMGA_WINDOW_FRAMES = 80
"""Frames of one Stage-I (SMGA) window, 3.2 s: the released model's ``seq_len``."""

LATENT_STRIDE = 8
"""Pixels per latent cell of the SD VAE (level 0 of the UNet)."""

LATENT_LEVELS = 4
"""UNet depths the motion masks are made for: H/8, H/16, H/32, H/64."""

SIZE_MULTIPLE = LATENT_STRIDE * 2 ** (LATENT_LEVELS - 1)
"""64: output sides must be multiples of it so every latent level tiles the frame exactly."""

MOTION_MODULE_MAX_FRAMES = 32
"""Frames the released motion modules hold positions for (``temporal_position_encoding_max_len``)."""

KEYPOINT_SCORE_THRESHOLD = 0.3
"""DWPose's visibility rule: a body joint is drawn when its score is > 0.3, a face/hand point counts when ≥ 0.3."""
