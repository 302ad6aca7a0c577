"""The one vision path: a CLIP ViT-L/14 read at its penultimate layer through ComfyUI's CLIP-vision
model and preprocessing (needs ComfyUI)."""
import json
import os

import comfy.clip_model
import comfy.clip_vision
import comfy.model_management as mm
import comfy.ops

from .comfy_patcher import core_model_patcher
from .vision import complete_vit_l

VIT_L_TOKENS, VIT_L_WIDTH = 257, 1024
VIT_L_CONFIG = os.path.join(os.path.dirname(comfy.clip_vision.__file__), "clip_vision_config_vitl.json")


class NotViTL14(ValueError):
    """A CLIP vision model whose hidden states are not ViT-L/14's at 224 px."""


class EmbeddedClipVision:
    """The ViT embedded in a DEADiff checkpoint as ComfyUI's CLIP-vision model, held in the dtype of the
    state dict it is given (ComfyUI's ClipVisionModel always takes the text encoders' dtype, which would
    round the official file's fp32 weights). Offers what DEADiff reads of a CLIP_VISION: image_size, patcher
    and encode_image."""

    def __init__(self, vision_state_dict):
        sd = comfy.clip_vision.convert_to_transformers(complete_vit_l(vision_state_dict), "")
        with open(VIT_L_CONFIG) as f:
            config = json.load(f)
        self.image_size = config["image_size"]
        self.dtype = sd["vision_model.embeddings.class_embedding"].dtype
        self.load_device = mm.text_encoder_device()
        # built on meta, then given the weights (assign), as ComfyUI loads its models under DynamicVRAM
        self.model = comfy.clip_model.CLIPVisionModelProjection(config, self.dtype, "meta", comfy.ops.manual_cast)
        self.model.load_state_dict(sd, assign=True)
        self.model.eval().requires_grad_(False)
        self.patcher = core_model_patcher(self.model, self.load_device, mm.text_encoder_offload_device())

    def encode_image(self, image, crop=True):
        mm.load_model_gpu(self.patcher)
        pixels = comfy.clip_vision.clip_preprocess(image.to(self.load_device), size=self.image_size, crop=crop).float()
        hidden = self.model(pixel_values=pixels, intermediate_output=-2)[1]
        return {"penultimate_hidden_states": hidden.to(mm.intermediate_device())}


def vision_hidden_states(clip_vision, image):
    """IMAGE [B, H, W, C] in 0..1 -> CLIP penultimate hidden states [B, 257, 1024].

    DEADiff squashes the reference to 224x224 (no aspect-preserving crop), hence crop=False.
    """
    hidden = clip_vision.encode_image(image, crop=False)["penultimate_hidden_states"]
    if tuple(hidden.shape[1:]) != (VIT_L_TOKENS, VIT_L_WIDTH):
        raise NotViTL14(f"DEADiff needs a CLIP ViT-L/14 224px vision model (257 tokens x 1024); this CLIP vision "
                        f"model gives {hidden.shape[1]} x {hidden.shape[2]}.")
    return hidden
