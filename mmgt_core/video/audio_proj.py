"""AudioProjModel: a window of wav2vec2 layer features per video frame -> audio context tokens (spec 3.9)."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError
from .config import AudioProjConfig


class AudioProjModel(nn.Module):
    """flatten(window x layers x channels) -> 3 Linear (ReLU between) -> (tokens, dim) -> LayerNorm."""

    def __init__(self, config: AudioProjConfig | None = None) -> None:
        super().__init__()
        config = config or AudioProjConfig()
        self.config = config
        self.proj1 = nn.Linear(config.input_dim, config.intermediate_dim)
        self.proj2 = nn.Linear(config.intermediate_dim, config.intermediate_dim)
        self.proj3 = nn.Linear(config.intermediate_dim, config.context_tokens * config.output_dim)
        self.norm = nn.LayerNorm(config.output_dim)

    def forward(self, audio_windows: torch.Tensor) -> torch.Tensor:
        """audio_windows (b, f, window, layers, channels) -> tokens (b, f, context_tokens, output_dim)."""
        config = self.config
        expected = (config.seq_len, config.blocks, config.channels)
        if audio_windows.dim() != 5 or tuple(audio_windows.shape[2:]) != expected:
            raise InputError(
                "audio_embeddings", f"expected (batch, frames, {', '.join(map(str, expected))}), got "
                f"{tuple(audio_windows.shape)}.",
                "Take a window of wav2vec2 features around every video frame (all transformer layers).",
            )
        batch, frames = audio_windows.shape[:2]
        hidden = torch.relu(self.proj1(audio_windows.reshape(batch * frames, config.input_dim)))
        hidden = torch.relu(self.proj2(hidden))
        tokens = self.proj3(hidden).reshape(batch * frames, config.context_tokens, config.output_dim)
        return self.norm(tokens).reshape(batch, frames, config.context_tokens, config.output_dim)
