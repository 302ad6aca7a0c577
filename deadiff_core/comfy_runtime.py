"""ComfyUI imported as a library, for everything that runs outside a ComfyUI server: the trainer, the data
builder, the developer scripts, the benchmarks and the tests. Inside ComfyUI the pack never calls it.

The ComfyUI used, first match wins:
1. the folder the caller names (a script's --comfyui option, the test suite's COMFYUI_PATH), and then no other;
2. $COMFYUI_PATH;
3. the ComfyUI whose custom_nodes/ holds this pack;
4. the runtime scripts/setup.sh set up (its folder recorded in .venv/comfyui-path).
2 to 4 is the order in which scripts/setup.sh picks that runtime, so all of them agree.
"""
import logging
import os
import sys

import torch

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
log = logging.getLogger("deadiff")


def _candidates():
    if os.environ.get("COMFYUI_PATH"):
        yield os.environ["COMFYUI_PATH"]
    parent = os.path.dirname(PACK_ROOT)
    if os.path.basename(parent) == "custom_nodes":
        yield os.path.dirname(parent)
    stamp = os.path.join(PACK_ROOT, ".venv", "comfyui-path")
    if os.path.isfile(stamp):
        with open(stamp) as f:
            yield f.read().strip()


def _is_comfyui(path):
    return os.path.isfile(os.path.join(path, "comfy", "model_management.py"))


def comfyui_path(path=None):
    """The ComfyUI folder to use: `path` when given (it must be one), else the first found in the order above."""
    if path:
        if not _is_comfyui(path):
            raise RuntimeError(f"{path} is not a ComfyUI folder (no comfy/model_management.py)")
        return path
    found = next((p for p in _candidates() if _is_comfyui(p)), None)
    if found is None:
        raise RuntimeError("ComfyUI not found: set COMFYUI_PATH to a ComfyUI folder (or run scripts/setup.sh)")
    return found


def import_comfy(path=None, cpu=None, pytorch_attention=False):
    """The `comfy` package, with ComfyUI put on sys.path and configured before its model management loads
    (once per process: later calls return what the first one set up).

    path: the ComfyUI folder (default: found as the module docstring says).
    cpu: force ComfyUI's CPU mode (default: when torch sees no GPU).
    pytorch_attention: as ComfyUI's --use-pytorch-cross-attention (its default on NVIDIA GPUs, not on the CPU).
    """
    if "comfy.model_management" not in sys.modules:
        path = comfyui_path(path)
        if path not in sys.path:
            sys.path.insert(0, path)
        from comfy.cli_args import args  # parses no command line: comfy.options.args_parsing stays False

        args.cpu = (not torch.cuda.is_available()) if cpu is None else cpu
        args.use_pytorch_cross_attention = args.use_pytorch_cross_attention or pytorch_attention
        import comfy.model_management  # noqa: F401  (decides CPU/GPU state on import)
        log.info("using ComfyUI at %s (%s)", path, "CPU" if args.cpu else "GPU")
    import comfy.ops  # callers reach comfy.ops.manual_cast through the package returned
    return comfy
