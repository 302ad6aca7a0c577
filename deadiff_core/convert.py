"""Convert deadiff_v1.ckpt (7.43 GB) into a small adapter .safetensors.

    python -m deadiff_core.convert deadiff_v1.ckpt deadiff_adapter.safetensors [--with-vision] [--dtype fp16|bf16|fp32] [--force]

Keeps the official key names of what it keeps: both Q-Formers with ln_vision and query tokens,
both ProjLayers, the 32 i_to_k/v weights, and (with --with-vision) one copy of the ViT after
checking the two branch copies are equal. Drops the UNet, VAE, text encoder, schedule buffers
and the BLIP heads unused at inference (Qformer.cls.* with its tied weight, vision_proj,
text_proj, itm_head, temp).
"""
import argparse
import os
import sys

from safetensors.torch import save_file
from tqdm import tqdm

from .checkpoint import ADAPTER_FORMAT, ADAPTER_FORMAT_VERSION, CheckpointError, adapter_layout, read_state_dict
from .file_pages import FilePages
from .precision import DTYPES


def convert(src, dst, with_vision=False, dtype="fp16", force=False, progress=True):
    """Write the adapter subset of `src` to `dst`; returns the metadata written."""
    if os.path.exists(dst) and not force:
        raise FileExistsError(f"{dst} already exists; pass --force to overwrite it.")
    sd, _ = read_state_dict(src)
    layout = adapter_layout(sd, src, with_vision)
    target = DTYPES[dtype]
    tensors, pages = {}, FilePages()
    for key in tqdm(layout.official_keys(), desc="converting", unit="tensor", disable=not progress):
        tensor = sd[key]
        # .to() copies only when the dtype changes; clone so no storage is shared (safetensors refuses it)
        tensors[key] = tensor.to(target).clone() if tensor.is_floating_point() else tensor.clone()
        pages.release(tensor)
    metadata = {
        "format": ADAPTER_FORMAT,
        "version": ADAPTER_FORMAT_VERSION,
        "branches": ",".join(layout.branches),
        "has_vision": str(bool(layout.vision_keys)).lower(),
        "dtype": dtype,
        "source": os.path.basename(os.fspath(src)),
    }
    partial = f"{dst}.partial"
    save_file(tensors, partial, metadata=metadata)
    os.replace(partial, dst)  # never leave a half-written adapter under the real name
    return metadata


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m deadiff_core.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="deadiff_v1.ckpt, or an adapter .safetensors to re-convert")
    parser.add_argument("dst", help="output .safetensors")
    parser.add_argument("--with-vision", action="store_true", help="keep one copy of the embedded CLIP ViT-L (+0.6 GB in fp16)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16", help="dtype of the floating-point tensors (default fp16)")
    parser.add_argument("--force", action="store_true", help="overwrite dst if it exists")
    args = parser.parse_args(argv)
    try:
        metadata = convert(args.src, args.dst, args.with_vision, args.dtype, args.force)
    except (CheckpointError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    size = os.path.getsize(args.dst) / 2**30
    print(f"wrote {args.dst} ({size:.2f} GiB): branches {metadata['branches']}, vision {metadata['has_vision']}, {metadata['dtype']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
