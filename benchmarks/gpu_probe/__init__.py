"""A custom node folder that only benchmarks/gpu_check.py links into its ComfyUI server's custom_nodes: no nodes,
just HTTP routes that read the server process's own GPU memory counters and ComfyUI's model-management state,
so that the check sees from inside the process that samples what it cannot see from outside.

    POST /deadiff_gpu_check/reset_peak    torch's peak counters start again (before a timed prompt)
    GET  /deadiff_gpu_check/memory        torch's allocator counters, DynamicVRAM's own VRAM, ComfyUI's flags
    POST /deadiff_gpu_check/hold          keep the live DEADiff adapters' and ComfyUI's loaded models' patchers
    GET  /deadiff_gpu_check/patchers      the held patchers: size, what ComfyUI has loaded, tensors on the GPU
    POST /deadiff_gpu_check/release       drop them again

`hold` keeps the patchers alive across /free (which also drops ComfyUI's output cache, and with it the DEADIFF
object), so that `patchers` afterwards tells whether ComfyUI's model management offloaded each one, rather than
only that it was garbage-collected. Call these only while no prompt runs.
"""
import gc

import comfy.model_management as mm
import torch
from aiohttp import web
from server import PromptServer

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}

routes = PromptServer.instance.routes
_held = []  # (name, patcher), between hold and release
DEADIFF_PATCHERS = {"DEADiff Q-Formers": "encoder_patcher", "DEADiff i_to_k/v projections": "projections_patcher"}


def _aimdo():
    """(DynamicVRAM on, bytes of VRAM comfy-aimdo holds) — its weights bypass torch's allocator counters."""
    try:
        import comfy.memory_management
        import comfy_aimdo.control
    except ImportError:  # ComfyUI before DynamicVRAM
        return False, 0
    return bool(getattr(comfy.memory_management, "aimdo_enabled", False)), int(comfy_aimdo.control.get_total_vram_usage())


@routes.post("/deadiff_gpu_check/reset_peak")
async def reset_peak(request):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    return web.json_response({"ok": True})


@routes.get("/deadiff_gpu_check/memory")
async def memory(request):
    dynamic_vram, aimdo_bytes = _aimdo()
    state = {"cuda": torch.cuda.is_available(), "dynamic_vram": dynamic_vram, "aimdo_vram": aimdo_bytes,
             "torch_device": str(mm.get_torch_device()), "loaded_models": len(mm.current_loaded_models)}
    if state["cuda"]:
        torch.cuda.synchronize()
        state.update(allocated=torch.cuda.memory_allocated(), reserved=torch.cuda.memory_reserved(),
                     max_allocated=torch.cuda.max_memory_allocated(), max_reserved=torch.cuda.max_memory_reserved())
    return web.json_response(state)


def _deadiff_patchers():
    """(name, patcher) of every live DEADIFF object's ModelPatchers: the Q-Formers', the projections' and the
    embedded CLIP vision model's (what Load DEADiff Model hands ComfyUI's model management)."""
    found = []
    adapters = [o for o in gc.get_objects() if type(o).__name__ == "ComfyDEADiff" and hasattr(o, "encoder_patcher")]
    for i, deadiff in enumerate(adapters):
        suffix = f" #{i + 1}" if len(adapters) > 1 else ""
        for name, attribute in DEADIFF_PATCHERS.items():
            found.append((name + suffix, getattr(deadiff, attribute)))
        vision = getattr(deadiff, "embedded_clip_vision", None)
        if vision is not None:
            found.append(("DEADiff CLIP vision (embedded ViT)" + suffix, vision.patcher))
    return found


@routes.post("/deadiff_gpu_check/hold")
async def hold(request):
    _held.clear()
    _held.extend(_deadiff_patchers())
    ours = {id(patcher) for _, patcher in _held}
    for loaded in mm.current_loaded_models:
        patcher = loaded.model
        if patcher is not None and id(patcher) not in ours:
            _held.append((type(patcher.model).__name__, patcher))
    return web.json_response({"held": [name for name, _ in _held]})


def _cuda_tensor_bytes(module):
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors if t.device.type == "cuda")


@routes.get("/deadiff_gpu_check/patchers")
async def patchers(request):
    loaded = {id(entry.model) for entry in mm.current_loaded_models}
    return web.json_response([{
        "name": name, "class": type(patcher).__name__, "dynamic": bool(getattr(patcher, "is_dynamic", bool)()),
        "load_device": str(patcher.load_device), "model_size": int(patcher.model_size()),
        "loaded_size": int(patcher.loaded_size()), "in_loaded_models": id(patcher) in loaded,
        "cuda_tensor_bytes": _cuda_tensor_bytes(patcher.model),
    } for name, patcher in _held])


@routes.post("/deadiff_gpu_check/release")
async def release(request):
    _held.clear()
    gc.collect()
    return web.json_response({"ok": True})
