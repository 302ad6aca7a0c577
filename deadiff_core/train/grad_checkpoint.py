"""Gradient checkpointing for ComfyUI's UNet: keep only each ResBlock's and SpatialTransformer's
inputs, recompute their insides during backward. Most of SD1.5's activation memory is there.

ComfyUI writes its per-block bookkeeping (block, block_index, ...) into the transformer_options
dict while the UNet runs, so the recomputation is given a copy taken at forward time; otherwise
the attn2 patches would be looked up under the last block's key during backward.
"""
import torch
from torch.utils.checkpoint import checkpoint


def _checkpointed(forward):
    def run(*args):
        frozen = tuple(dict(a) if isinstance(a, dict) else a for a in args)
        if not torch.is_grad_enabled():
            return forward(*frozen)
        return checkpoint(forward, *frozen, use_reentrant=False)
    return run


def enable_gradient_checkpointing(unet):
    """Wrap, in place, the forward of every ResBlock and SpatialTransformer of a ComfyUI UNet."""
    from comfy.ldm.modules.attention import SpatialTransformer
    from comfy.ldm.modules.diffusionmodules.openaimodel import ResBlock

    count = 0
    for module in unet.modules():
        if isinstance(module, (ResBlock, SpatialTransformer)):
            module.forward = _checkpointed(module.forward)
            count += 1
    return count
