"""What the DEADIFF socket carries: a loaded adapter whose weights ComfyUI's model management
loads and offloads (needs ComfyUI)."""
import dataclasses

import comfy.model_management as mm
import torch

from .comfy_patcher import core_model_patcher
from .comfy_vision import EmbeddedClipVision, vision_hidden_states
from .tokens import ReferenceTokens


class ComfyDEADiff:
    def __init__(self, adapter):
        # The file's own ViT becomes ComfyUI's CLIP-vision model (None if it has none) and its state dict is
        # dropped: the weights are held once, in a ModelPatcher that ComfyUI counts, loads and offloads.
        vision = adapter.vision_state_dict
        self.embedded_clip_vision = EmbeddedClipVision(vision) if vision is not None else None
        self.adapter = dataclasses.replace(adapter, vision_state_dict=None)
        self.info = adapter.info
        # Q-Formers run beside the text encoders; the i_to_k/v projections ride along with the UNet.
        self.encoder_patcher = core_model_patcher(adapter.encoder, mm.text_encoder_device(), mm.text_encoder_offload_device())
        self.projections_patcher = core_model_patcher(adapter.projections, mm.get_torch_device(), mm.unet_offload_device())

    def encode(self, image, clip_vision):
        """IMAGE [N, H, W, C] -> ReferenceTokens with one row per image, on the intermediate device."""
        hidden = vision_hidden_states(clip_vision, image)
        mm.load_model_gpu(self.encoder_patcher)
        device = self.encoder_patcher.load_device
        with torch.no_grad():
            tokens = self.adapter.encoder(hidden.to(device=device, dtype=torch.float32))
        out = mm.intermediate_device()
        return ReferenceTokens(**{branch: t.to(out, torch.float32) for branch, t in tokens.items()})
