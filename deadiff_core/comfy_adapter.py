"""What the DEADIFF socket carries: a loaded adapter whose weights ComfyUI's model management
loads and offloads (needs ComfyUI)."""
import dataclasses

import comfy.model_management as mm
import torch

from .comfy_patcher import core_model_patcher
from .comfy_vision import EmbeddedClipVision, vision_hidden_states
from .images import fit_to_square
from .token_bounds import token_bound
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
        self._token_bounds = {}

    def token_bound(self, branch):
        """The per-channel bound on this model's `branch` tokens (token_bounds.token_bound), computed once."""
        if branch not in self._token_bounds:
            self._token_bounds[branch] = token_bound(self.adapter.encoder.branches[branch])
        return self._token_bounds[branch]

    def encode(self, image, clip_vision, progress=None, fit="squash"):
        """IMAGE [N, H, W, C] -> ReferenceTokens with one row per image, on the intermediate device. Each image is
        first fitted to a square as `fit` says (images.fit_to_square); "squash" is the official preprocessing.

        One reference at a time through the vision model and both Q-Formers, with `progress(done, total)` called
        after each: a batch's tokens are exactly those of its references encoded alone (no computation mixes
        the rows of a batch; per row, batched and single matmuls may round differently, so batching would
        make a reference's tokens depend on its batch)."""
        total = image.shape[0]
        rows = []
        for index in range(total):
            hidden = vision_hidden_states(clip_vision, fit_to_square(image[index:index + 1], fit))
            mm.load_model_gpu(self.encoder_patcher)
            device = self.encoder_patcher.load_device
            with torch.no_grad():
                rows.append(self.adapter.encoder(hidden.to(device=device, dtype=torch.float32)))
            if progress is not None:
                progress(index + 1, total)
        out = mm.intermediate_device()
        return ReferenceTokens(**{branch: torch.cat([row[branch] for row in rows]).to(out, torch.float32)
                                  for branch in rows[0]})
