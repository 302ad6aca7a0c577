"""ComfyUI imported as a library by the command-line tools (trainer, data builder).

The ComfyUI used, first match wins: $COMFYUI_PATH; the ComfyUI whose custom_nodes/ holds this
pack; the runtime scripts/setup.sh installed (.venv/comfyui-path).
"""
import logging
import os
import sys

import torch

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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


def import_comfy(cpu=None):
    """Put ComfyUI on sys.path and configure it before its model management loads.

    cpu: force ComfyUI's CPU mode (default: when torch sees no GPU).
    """
    if "comfy.model_management" in sys.modules:
        return
    path = next((p for p in _candidates() if os.path.isfile(os.path.join(p, "comfy", "model_management.py"))), None)
    if path is None:
        raise RuntimeError("ComfyUI not found: set COMFYUI_PATH to a ComfyUI folder (or run scripts/setup.sh)")
    if path not in sys.path:
        sys.path.insert(0, path)
    from comfy.cli_args import args  # parses no command line: comfy.options.args_parsing stays False

    args.cpu = (not torch.cuda.is_available()) if cpu is None else cpu
    import comfy.model_management  # noqa: F401  (decides CPU/GPU state on import)
    log.info("using ComfyUI at %s (%s)", path, "CPU" if args.cpu else "GPU")
