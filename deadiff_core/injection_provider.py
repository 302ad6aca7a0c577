"""What the attn2 patch (comfy_patch.DEADiffAttentionPatch) asks of the source of its image keys/values.

Inference (`comfy_patch.Injection`: one token set per layer, projected once and cached) and training
(`train.injection.PerSampleInjection`: each row its own tokens, projected with gradients) both provide it;
the patch itself never knows which one it reads.
"""
from typing import Protocol

import torch

from .layers import CrossAttentionLayer


class InjectionProvider(Protocol):
    def image_keys_values(self, layer: CrossAttentionLayer, extra_options: dict, batch: int,
                          device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row image keys and values [batch, T, C] for this layer, exact zeros in rows without a reference."""
        ...

    def region(self, extra_options: dict, length: int, batch: int,
               device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
        """Where the reference acts on this layer's `length` tokens: [batch or 1, length, 1] in 0..1, or None
        for everywhere."""
        ...

    def models(self) -> list:
        """The ModelPatchers ComfyUI loads with the UNet for this provider (its projections' weights)."""
        ...
