"""Stage I of MMGT: the SMGA audio-to-pose diffusion model, its sampler and long-audio generation."""

from .diffusion import cosine_schedule, ddim_sample, p_losses
from .generate import generate_pose_sequence, total_diffusion_steps
from .model import TINY_TEST_CONFIG, GestureDecoder, SMGAConfig, load_smga

__all__ = [
    "GestureDecoder",
    "SMGAConfig",
    "TINY_TEST_CONFIG",
    "cosine_schedule",
    "ddim_sample",
    "generate_pose_sequence",
    "load_smga",
    "p_losses",
    "total_diffusion_steps",
]
