"""The one vision path: ComfyUI's CLIP-vision model read at its penultimate layer (needs ComfyUI)."""
import comfy.clip_vision

from .vision import complete_vit_l

VIT_L_TOKENS, VIT_L_WIDTH = 257, 1024


def clip_vision_from_embedded(vision_state_dict):
    """A ComfyUI ClipVisionModel holding the ViT embedded in a DEADiff checkpoint."""
    return comfy.clip_vision.load_clipvision_from_sd(complete_vit_l(vision_state_dict), convert_keys=True)


def vision_hidden_states(clip_vision, image):
    """IMAGE [B, H, W, C] in 0..1 -> CLIP penultimate hidden states [B, 257, 1024].

    DEADiff squashes the reference to 224x224 (no aspect-preserving crop), hence crop=False.
    """
    hidden = clip_vision.encode_image(image, crop=False)["penultimate_hidden_states"]
    if tuple(hidden.shape[1:]) != (VIT_L_TOKENS, VIT_L_WIDTH):
        raise ValueError(f"DEADiff needs a CLIP ViT-L/14 224px vision model (257 tokens x 1024); this CLIP vision model "
                         f"gives {hidden.shape[1]} x {hidden.shape[2]}. Load clip_vision ViT-L/14 (e.g. "
                         "CLIP-ViT-L-14 / clip_vision_l.safetensors), or leave clip_vision unconnected to use "
                         "the checkpoint's own.")
    return hidden
