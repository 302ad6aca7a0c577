"""Loading cost: time and peak resident memory of loading DEADiff weights, side by side.

    python -m benchmarks.load_checkpoint [--size full|tiny] [--workdir DIR] [--repeats N]

Builds a random-weight file in the official deadiff_v1.ckpt layout (full size: 7.4 GB, with UNet, VAE and
text-encoder stand-ins of the real sizes), converts it, then loads each variant in a fresh process and
reports the peak RSS above that process's baseline as a multiple of the adapter's own size.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

import torch

from benchmarks.harness import root_on_pythonpath, spread
from deadiff_core.convert import convert
from deadiff_core.synthetic import TINY, OfficialLayout, official_state_dict, save_official_checkpoint

# parameter counts of the parts the loader must skip (SD1.5 UNet, VAE, CLIP-L text encoder)
OTHER_PARTS = {"model.diffusion_model": 859_520_964, "first_stage_model": 83_653_863,
               "cond_stage_model.transformer.text_model": 123_060_480}
CHUNK = 64 * 2**20

MEASURE = """
import json, time, torch
from deadiff_core.checkpoint import load_adapter

def status(field):
    return int(next(l for l in open("/proc/self/status") if l.startswith(field)).split()[1]) * 1024

load_adapter({warmup!r})  # a tiny file: one-time imports and allocator set-up stay out of the figures
baseline = status("VmRSS:")
start = time.perf_counter()
adapter = load_adapter({path!r}, dtype=getattr(torch, {dtype!r}), with_vision={with_vision!r})
seconds = time.perf_counter() - start
tensors = [*adapter.encoder.state_dict().values(), *adapter.projections.state_dict().values(),
           *(adapter.vision_state_dict or {{}}).values()]
print(json.dumps({{"seconds": seconds, "peak_above_baseline": status("VmHWM:") - baseline,
                  "adapter_bytes": sum(t.numel() * t.element_size() for t in tensors)}}))
"""


def stand_ins(size_scale):
    """Zero tensors of the skipped parts' real sizes (their content never matters to the loader)."""
    sd = {}
    for prefix, count in OTHER_PARTS.items():
        count = int(count * size_scale)
        for i, start in enumerate(range(0, count, CHUNK)):
            sd[f"{prefix}.stand_in_{i}"] = torch.zeros(min(CHUNK, count - start))
    return sd


def build_files(workdir, layout, size_scale):
    warmup = os.path.join(workdir, "warmup.ckpt")
    if not os.path.exists(warmup):
        save_official_checkpoint(warmup, official_state_dict(TINY, with_other_parts=False))
    official = os.path.join(workdir, "deadiff_v1.ckpt")
    if not os.path.exists(official):
        sd = official_state_dict(layout)
        sd.update(stand_ins(size_scale))
        save_official_checkpoint(official, sd)
        del sd
    files = {"warmup": warmup, "official .ckpt": official}
    for name, vision in (("adapter fp16", False), ("adapter fp16 + vision", True)):
        path = os.path.join(workdir, name.replace(" ", "_").replace("+", "with") + ".safetensors")
        if not os.path.exists(path):
            convert(official, path, with_vision=vision, dtype="fp16", progress=False)
        files[name] = path
    return files


def measure(path, warmup, dtype, with_vision):
    code = MEASURE.format(path=path, warmup=warmup, dtype=dtype, with_vision=with_vision)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=root_on_pythonpath())
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=["full", "tiny"], default="full")
    parser.add_argument("--workdir", help="where the generated files go (default: a temporary folder, removed after)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    layout, scale = (OfficialLayout(), 1.0) if args.size == "full" else (TINY, 1e-4)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or tmp
        os.makedirs(workdir, exist_ok=True)
        files = build_files(workdir, layout, scale)
        cases = [("official .ckpt", "float32", False), ("official .ckpt", "float32", True),
                 ("official .ckpt", "float16", False), ("adapter fp16", "float16", False),
                 ("adapter fp16 + vision", "float16", True)]
        print("file sizes: " + ", ".join(f"{name} {os.path.getsize(p) / 2**30:.2f} GiB" for name, p in files.items() if name != "warmup"))
        print("| file | load dtype | vision | adapter MiB | peak RSS above baseline MiB | ratio | seconds (median, min-max) |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for name, dtype, vision in cases:
            runs = [measure(files[name], files["warmup"], dtype, vision) for _ in range(args.repeats)]
            peak = statistics.median(r["peak_above_baseline"] for r in runs)
            adapter = runs[0]["adapter_bytes"]
            seconds = [r["seconds"] for r in runs]
            print(f"| {name} | {dtype} | {vision} | {adapter / 2**20:.0f} | {peak / 2**20:.0f} | {peak / adapter:.2f}x | "
                  f"{spread(seconds)} |")


if __name__ == "__main__":
    main()
