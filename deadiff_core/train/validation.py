"""Validation images during training: fixed references and prompts sampled through exactly what a
ComfyUI user runs (apply_deadiff's patches, KSampler's sampling), with the weights being trained."""
import logging
import os

import numpy as np
import torch
from PIL import Image

from ..backbone import conditioning
from ..checkpoint import AdapterInfo, DEADiffAdapter
from ..comfy_patch import InjectionSettings, apply_deadiff
from ..data.dataset import load_rgb
from ..tokens import ReferenceTokens

log = logging.getLogger("deadiff")


def training_deadiff(encoder, projections, device):
    """A DEADIFF over the modules being trained. Its projections' patcher loads and offloads to the
    training device only: ComfyUI's memory manager must never move trained weights to the CPU."""
    import comfy.model_patcher

    from ..comfy_adapter import ComfyDEADiff

    info = AdapterInfo(source_format="training", branches=tuple(encoder.branches), has_vision=False,
                       stored_dtypes=(torch.float32,), qformer=encoder.config)
    deadiff = ComfyDEADiff(DEADiffAdapter(encoder, projections, None, info))
    deadiff.projections_patcher = comfy.model_patcher.ModelPatcher(projections, load_device=device, offload_device=device)
    return deadiff


@torch.no_grad()
def sample_validation_images(folder, settings, backbone, frozen, encoder, projections, resolution, device, resolve):
    """One PNG per (reference, prompt) into `folder`; returns their paths."""
    import comfy.sample

    was_training = encoder.training
    encoder.eval()
    try:
        deadiff = training_deadiff(encoder, projections, device)
        negative = conditioning(backbone.clip, settings.negative)
        latent = torch.zeros(1, 4, resolution // 8, resolution // 8)
        os.makedirs(folder, exist_ok=True)
        written = []
        for r, reference in enumerate(settings.references):
            image = load_rgb(resolve(reference))[None]
            tokens = ReferenceTokens(**encoder(frozen.vision_states(image)))
            model = apply_deadiff(backbone.model, deadiff, tokens, InjectionSettings(mode=settings.mode))
            for p, prompt in enumerate(settings.prompts):
                samples = comfy.sample.sample(model, comfy.sample.prepare_noise(latent, settings.seed), settings.steps, settings.cfg,
                                              settings.sampler, settings.scheduler, conditioning(backbone.clip, prompt), negative,
                                              latent, seed=settings.seed, disable_pbar=True)
                pixels = backbone.vae.decode(samples)[0].clamp(0, 1)
                path = os.path.join(folder, f"reference{r}_prompt{p}.png")
                Image.fromarray((pixels.float().cpu().numpy() * 255).round().astype(np.uint8)).save(path)
                written.append(path)
        return written
    finally:
        encoder.train(was_training)
