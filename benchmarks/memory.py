"""Memory of the DEADiff adapter: what it holds per `branches` option of Load DEADiff Model and per precision, what
ComfyUI's model management sees of it, and (on a GPU) the VRAM it adds to a sampling step.

    python -m benchmarks.memory [--tiny] [--size PX]

A random-weight file in the official deadiff_v1.ckpt layout (full size: both BLIP models with their ViT copies,
both ProjLayers, the 32 i_to_k/v) is loaded as the loader node loads it (load_adapter with ComfyUI's manual_cast
operations), for each `branches` option in fp16 and fp32. "Held" counts the distinct tensor storages the DEADIFF
object keeps: Q-Formers with their ProjLayers, the image projections and ComfyUI's CLIP vision model built from
the embedded ViT. "ComfyUI's patchers" is what its ModelPatchers report (`model_size()`, what it loads, offloads
and frees memory for): the encoder's, the projections' and the CLIP vision model's.

On a GPU: torch.cuda.max_memory_allocated over one call of ComfyUI's SD1.5 UNet (random weights, fp16, batch 2 =
cond + uncond, as unet_step.py calls it), unpatched and with each mode the loaded branches allow, with the
projections loaded on the GPU as sampling loads them.
"""
import gc
import os
import tempfile

import torch

from benchmarks.harness import command_line, device_and_dtype

from deadiff_core.checkpoint import load_adapter
from deadiff_core.comfy_runtime import import_comfy
from deadiff_core.layers import BRANCHES, CONTENT, MODES, STYLE
from deadiff_core.precision import DTYPES
from deadiff_core.synthetic import VIT_L_TINY, OfficialLayout, official_state_dict, save_official_checkpoint
from deadiff_core.tokens import ReferenceTokens

WEIGHT_PRECISIONS = ("fp16", "fp32")
MIB = 2**20
# what Load DEADiff Model's `branches` choices load
LOADABLE_BRANCHES = {"both": BRANCHES, "style only": (STYLE,), "content only": (CONTENT,)}


def held_bytes(*state_dicts):
    """Bytes of the distinct storages behind the tensors (a storage two tensors share counts once)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for sd in state_dicts for t in sd.values()}
    return sum(storages.values())


def load_deadiff(comfy, path, branches, dtype):
    """What Load DEADiff Model returns for these branches and weight dtype."""
    from deadiff_core.comfy_adapter import ComfyDEADiff

    return ComfyDEADiff(load_adapter(path, dtype=dtype, operations=comfy.ops.manual_cast, branches=branches))


def adapter_sizes(deadiff):
    """MiB held by each part of a DEADIFF object and by all of them, and what ComfyUI's patchers report."""
    vision = deadiff.embedded_clip_vision
    parts = (deadiff.adapter.encoder.state_dict(), deadiff.adapter.projections.state_dict(), vision.model.state_dict())
    patchers = (deadiff.encoder_patcher, deadiff.projections_patcher, vision.patcher)
    sizes = (*map(held_bytes, parts), held_bytes(*parts), sum(patcher.model_size() for patcher in patchers))
    return [size / MIB for size in sizes]


def resident_sizes(comfy, path):
    print("| branches | weights | Q-Formers + ProjLayers MiB | i_to_k/v MiB | embedded ViT (CLIP vision model) MiB | "
          "held MiB | ComfyUI's patchers MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for choice, branches in LOADABLE_BRANCHES.items():
        for dtype_name in WEIGHT_PRECISIONS:
            sizes = adapter_sizes(load_deadiff(comfy, path, branches, DTYPES[dtype_name]))
            print(f"| {choice} | {dtype_name} | " + " | ".join(f"{size:.1f}" for size in sizes) + " |")
            gc.collect()  # the adapter goes before the next one loads


def peak_during_step(model, inputs):
    """(bytes allocated before one UNet call, the peak during it)."""
    from benchmarks.unet_step import step

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step(model, *inputs)
    torch.cuda.synchronize()
    return before, torch.cuda.max_memory_allocated()


def vram_per_mode(comfy, path, size):
    from deadiff_core.comfy_patch import InjectionSettings, apply_deadiff
    from benchmarks.unet_step import step_inputs, unet_on

    mm = comfy.model_management
    device, dtype = device_and_dtype()
    unet = unet_on(comfy, device, dtype)
    inputs = step_inputs(size, device, dtype)
    g = torch.Generator().manual_seed(4)
    tokens = ReferenceTokens(style=torch.randn(1, 16, 768, generator=g), content=torch.randn(1, 16, 768, generator=g))
    latent = size // 8
    print(f"\nVRAM over one SD1.5 UNet call on {torch.cuda.get_device_name()}: {size}x{size} px (latent {latent}x{latent}), "
          f"batch 2 (cond + uncond), {dtype}; the projections loaded in fp16 beside the UNet")
    print("| adapter branches | mode | allocated before the call MiB | peak during the call MiB | "
          "peak above unpatched MiB |")
    print("| --- | --- | --- | --- | --- |")
    with torch.inference_mode():
        before, unpatched = peak_during_step(unet, inputs)
        print(f"| - | unpatched | {before / MIB:.1f} | {unpatched / MIB:.1f} | 0.0 |")
        for choice, branches in LOADABLE_BRANCHES.items():
            deadiff = load_deadiff(comfy, path, branches, torch.float16)
            mm.load_models_gpu([deadiff.projections_patcher])  # as sampling does: the patches' models with the UNet
            for mode in (mode for mode, needs in MODES.items() if set(needs) <= set(deadiff.info.branches)):
                model = apply_deadiff(unet, deadiff, tokens, InjectionSettings(mode=mode))
                before, peak = peak_during_step(model, inputs)
                print(f"| {choice} | {mode} | {before / MIB:.1f} | {peak / MIB:.1f} | {(peak - unpatched) / MIB:.1f} |")
            mm.unload_all_models()
            del deadiff, model
            gc.collect()
            torch.cuda.empty_cache()


def main():
    parser = command_line(__doc__, "for CI: one ViT block and a one-layer Q-Former (real widths, so the "
                                   "projections still fit SD1.5); 64 px on a GPU")
    parser.add_argument("--size", type=int, help="image side in pixels on a GPU (default 512, --tiny 64)")
    args = parser.parse_args()
    comfy = import_comfy()
    layout = VIT_L_TINY if args.tiny else OfficialLayout()

    with tempfile.TemporaryDirectory() as workdir:
        path = os.path.join(workdir, "deadiff_v1.ckpt")
        save_official_checkpoint(path, official_state_dict(layout, seed=0, with_other_parts=False))
        print(f"DEADiff file in the official layout, {os.path.getsize(path) / 2**30:.2f} GiB (Q-Former "
              f"{layout.qformer_layers} layers, ViT {layout.vision_blocks} blocks); torch {torch.__version__}")
        resident_sizes(comfy, path)
        if torch.cuda.is_available():
            vram_per_mode(comfy, path, args.size or (64 if args.tiny else 512))
        else:
            print("\nVRAM during sampling: not measured (no GPU: torch.cuda.is_available() is False)")


if __name__ == "__main__":
    main()
