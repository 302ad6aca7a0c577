"""Per-GPU memory of a full-size DEADiff training run, computed without a GPU:

    python -m deadiff_core.train.memory [--batch 8] [--resolution 512] [--gpus 8] [--fsdp] [--precision bf16]

- parameters: counted in the real modules (ComfyUI's SD1.5 UNet, VAE and CLIP-L, the ViT-L layout of
  docs/DESIGN.md, Checkpoint, DEADiff's Q-Formers and projections) built on PyTorch's `meta` device;
- weights: frozen ones stored in the autocast precision (2 bytes, 4 in fp32), trained ones in fp32
  with their gradient and AdamW's two moments (16 bytes; / GPUs under FSDP);
- activations: the bytes autograd keeps for backward, counted in one forward of the training
  objective on `meta` (no memory used), with attention counted as a fused kernel (flash /
  memory-efficient SDPA, what ComfyUI uses on GPUs) keeps it: q, k, v, output, log-sum-exp. With
  gradient checkpointing: what stays outside the checkpointed blocks, their inputs, and the
  largest block's insides while it is recomputed.
Not included: the CUDA context and kernels (~0.5-1 GB) and allocator fragmentation (~10 %).
"""
import argparse
from contextlib import contextmanager

import torch

from ..precision import DTYPES
from ..sd15 import SD15_UNET, SD_VAE

GiB = 2 ** 30


def _count(module):
    return sum(p.numel() for p in module.parameters())


def frozen_parameter_counts():
    import comfy.ldm.models.autoencoder
    import comfy.sd1_clip
    import comfy.supported_models

    from ..synthetic import OfficialLayout, _Random, vision_encoder

    unet = comfy.supported_models.SD15(dict(SD15_UNET, dtype=torch.float32)).get_model({}, device="meta").diffusion_model
    with torch.device("meta"):
        vae = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=SD_VAE, embed_dim=4)
        text = comfy.sd1_clip.SDClipModel(device="meta", dtype=torch.float32)
    vit = vision_encoder(OfficialLayout(), _Random(0, 1.0, "meta"))
    return {"UNet": _count(unet), "VAE": _count(vae), "text encoder (CLIP-L)": _count(text),
            "vision tower (ViT-L, 23 blocks)": sum(t.numel() for t in vit.values())}, unet


class _FusedAttention(torch.autograd.Function):
    """Shape-only attention that saves what a fused kernel saves for its backward."""

    @staticmethod
    def forward(ctx, q, k, v, heads):
        out = torch.empty_like(q)
        ctx.save_for_backward(q, k, v, out, torch.empty(q.shape[0], heads, q.shape[1], device=q.device))
        return out

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError("shape accounting only")


@contextmanager
def _fused_attention():
    import comfy.ldm.modules.attention as attention

    original = attention.optimized_attention
    attention.optimized_attention = lambda q, k, v, heads, *args, **kwargs: _FusedAttention.apply(q, k, v, heads)
    try:
        yield
    finally:
        attention.optimized_attention = original


def activation_bytes(unet, batch, resolution, precision):
    """(total, with gradient checkpointing) bytes autograd keeps for one micro-batch."""
    from comfy.ldm.modules.attention import SpatialTransformer
    from comfy.ldm.modules.diffusionmodules.openaimodel import ResBlock

    from ..encoder import DEADiffEncoder
    from ..layers import SD15_LAYERS
    from ..projections import ImageProjections
    from ..qformer import QFormerConfig
    import comfy.model_patcher

    from .injection import PerSampleInjection, patched_transformer_options
    from .objective import DEADiffObjective, SD15NoiseSchedule

    encoder = DEADiffEncoder(QFormerConfig(), 3072, device="meta")
    projections = ImageProjections({layer.index: layer.channels for layer in SD15_LAYERS}, 768, device="meta")
    injection = PerSampleInjection(projections)
    patcher = comfy.model_patcher.ModelPatcher(unet, load_device="meta", offload_device="meta")
    objective = DEADiffObjective(encoder, projections, unet.requires_grad_(False), patched_transformer_options(patcher, injection),
                                 injection, SD15NoiseSchedule())
    inside = {"block": None}
    per_block, block_inputs, outside = {}, {}, [0]

    def pre(module, args):
        inside["block"] = module
        block_inputs[module] = args[0].numel() * args[0].element_size()

    def post(module, args, output):
        inside["block"] = None

    hooks = [m.register_forward_pre_hook(pre) for m in unet.modules() if isinstance(m, (ResBlock, SpatialTransformer))]
    hooks += [m.register_forward_hook(post) for m in unet.modules() if isinstance(m, (ResBlock, SpatialTransformer))]

    weights = {id(p) for m in (unet, encoder, projections) for p in m.parameters()}

    def pack(tensor):
        if id(tensor) in weights or (tensor._base is not None and id(tensor._base) in weights):
            return tensor  # a weight kept for backward is the weight itself, already counted
        size = tensor.numel() * tensor.element_size()
        if inside["block"] is None:
            outside[0] += size
        else:
            per_block[inside["block"]] = per_block.get(inside["block"], 0) + size
        return tensor

    side = resolution // 8
    inputs = {"vision": torch.zeros(batch, 257, 1024, device="meta"), "latents": torch.zeros(batch, 4, side, side, device="meta"),
              "context": torch.zeros(batch, 77, 768, device="meta"), "noise": torch.zeros(batch, 4, side, side, device="meta"),
              "timesteps": torch.zeros(batch, dtype=torch.long, device="meta"),
              "keep_style": torch.ones(batch, dtype=torch.bool, device="meta"),
              "keep_content": torch.ones(batch, dtype=torch.bool, device="meta")}
    # autocast does not reach meta tensors: run in the autocast dtype instead (norms and softmax,
    # which autocast keeps in fp32, are then counted at 2 bytes: a slight undercount)
    dtype = DTYPES[precision]
    objective.to(dtype)
    unet.to(dtype)
    inputs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
    objective.frozen.schedule.alphas_cumprod = objective.frozen.schedule.alphas_cumprod.to("meta")
    try:
        with _fused_attention(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            objective(**inputs)
    finally:
        for hook in hooks:
            hook.remove()
    total = outside[0] + sum(per_block.values())
    checkpointed = outside[0] + sum(block_inputs.values()) + max(per_block.values())
    return total, checkpointed


def estimate(batch=8, resolution=512, gpus=1, fsdp=False, precision="bf16"):
    from ..encoder import DEADiffEncoder
    from ..layers import SD15_LAYERS
    from ..projections import ImageProjections
    from ..qformer import QFormerConfig

    frozen, unet = frozen_parameter_counts()
    encoder = DEADiffEncoder(QFormerConfig(), 3072, device="meta")
    branch = max(_count(b) - _count(b.ln_vision) for b in encoder.branches.values())
    projections = _count(ImageProjections({layer.index: layer.channels for layer in SD15_LAYERS}, 768, device="meta"))
    trainable = len(encoder.branches) * branch + projections
    weight_bytes = 4 if precision == "fp32" else 2
    activations, checkpointed = activation_bytes(unet, batch, resolution, precision)
    sharded = fsdp and gpus > 1
    rows = {f"frozen weights ({sum(frozen.values()) / 1e6:.0f} M params, {weight_bytes} B each)": sum(frozen.values()) * weight_bytes,
            f"trained weights + gradients + AdamW ({trainable / 1e6:.0f} M params, 16 B each{f' / {gpus} GPUs' if sharded else ''})":
                trainable * 16 / (gpus if sharded else 1)}
    if sharded:  # the root group (i_to_k/v) stays gathered through the forward, a branch while it runs
        rows["FSDP: weights gathered at once (the i_to_k/v + one Q-Former branch, fp32)"] = 4 * (projections + branch)
    return frozen, trainable, rows, activations, checkpointed


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m deadiff_core.train.memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8, help="micro-batch per GPU")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--gpus", type=int, default=1)
    parser.add_argument("--fsdp", action="store_true")
    parser.add_argument("--precision", choices=list(DTYPES), default="bf16")
    args = parser.parse_args(argv)
    from ..comfy_runtime import import_comfy

    import_comfy(cpu=True)
    frozen, trainable, rows, activations, checkpointed = estimate(args.batch, args.resolution, args.gpus, args.fsdp, args.precision)
    for name, count in frozen.items():
        print(f"  {name}: {count / 1e6:.1f} M parameters")
    print(f"  trained (Q-Formers + query tokens, ProjLayers, i_to_k/v): {trainable / 1e6:.1f} M parameters")
    fixed = sum(rows.values())
    for name, size in rows.items():
        print(f"{name}: {size / GiB:.2f} GiB")
    print(f"activations, batch {args.batch} at {args.resolution}px: {activations / GiB:.2f} GiB "
          f"({checkpointed / GiB:.2f} GiB with gradient checkpointing)")
    print(f"total per GPU: {(fixed + activations) / GiB:.1f} GiB ({(fixed + checkpointed) / GiB:.1f} GiB with gradient checkpointing)")


if __name__ == "__main__":
    main()
