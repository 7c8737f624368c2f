"""Stage I of MMGT: the SMGA audio-to-pose diffusion model, its sampler and long-audio generation."""

from .model import TINY_TEST_CONFIG, GestureDecoder, SMGAConfig, build_smga, load_smga

__all__ = ["GestureDecoder", "SMGAConfig", "TINY_TEST_CONFIG", "build_smga", "load_smga"]
