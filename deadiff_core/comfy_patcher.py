"""The ModelPatcher ComfyUI wraps its own models in (needs ComfyUI)."""
import comfy.model_patcher


def core_model_patcher(model, load_device, offload_device):
    """CoreModelPatcher: ComfyUI 0.3x's patcher for its own models, the dynamic one where DynamicVRAM is on
    (main.py swaps it in at start-up, so it is looked up on each call); ModelPatcher in releases before it."""
    patcher = getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)
    return patcher(model, load_device=load_device, offload_device=offload_device)
