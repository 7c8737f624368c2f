"""ReferenceNet: the SD1.5 ``UNet2DConditionModel`` without ``conv_norm_out``/``conv_out`` (spec 3.2).

It runs once per video, at t = 0 on the reference-image latent, with the CLIP image embedding as context.
Its output is discarded; what matters are the ``norm1`` outputs of its transformer blocks (the reference bank).
"""

from __future__ import annotations

from functools import partial

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention import BasicTransformerBlock
from torch import nn

from .config import UNetConfig
from .reference_bank import ReferenceBank, round_through_fp16


class ReferenceNet(UNet2DConditionModel):
    """diffusers UNet2DConditionModel with the output head removed; :meth:`write_bank` collects the banks."""

    @classmethod
    def from_unet_config(cls, config: UNetConfig) -> ReferenceNet:
        net = cls(**config.diffusers_config())
        net.conv_norm_out = None  # absent in the official ReferenceNet (and in its checkpoints)
        net.conv_act = None
        net.conv_out = nn.Identity()
        return net

    def bank_blocks(self) -> list[tuple[str, BasicTransformerBlock]]:
        """The writer blocks in module (DFS) order, as the official ``torch_dfs`` lists them."""
        return [(name, module) for name, module in self.named_modules() if isinstance(module, BasicTransformerBlock)]

    def write_bank(
        self,
        latent: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        timestep: int | torch.Tensor = 0,
        round_to_fp16: bool = True,
    ) -> ReferenceBank:
        """Run once on the reference latent (B, 4, h, w) with context (B, T, C) and return every block's norm1(h).

        ``round_to_fp16`` (default, official) rounds the banks through float16 as ``update()`` does; the
        pipeline needs only the conditional row (B = 1, context = CLIP image embedding).
        """
        blocks = self.bank_blocks()
        captured: dict[str, torch.Tensor] = {}
        handles = [block.norm1.register_forward_hook(partial(_capture, captured, name)) for name, block in blocks]
        try:
            self(latent, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False)
        finally:
            for handle in handles:
                handle.remove()
        names = [name for name, _ in blocks]
        features = [captured[name] for name in names]
        if round_to_fp16:
            features = [round_through_fp16(feature) for feature in features]
        return ReferenceBank(names=names, features=features)


def _capture(store: dict[str, torch.Tensor], name: str, module: nn.Module, inputs: object,
             output: torch.Tensor) -> None:
    store[name] = output
