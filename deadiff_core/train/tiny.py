"""A tiny random SD1.5-shaped backbone built with ComfyUI's own classes, for dry runs of the trainer
and the data builder (check a multi-node setup, a config or a manifest before downloading
weights) and for tests.

Same architecture family as SD1.5 (all 16 cross-attention layers at the same places, text context
768, latent 4 channels, /8) at a fraction of the width; ComfyUI's checkpoint detection would not
recognise it, hence `model.factory = "deadiff_core.train.tiny:tiny_backbone"` instead of a file.
"""
import json
import os
import tempfile

import torch

from ..backbone import Backbone
from ..sd15 import SD15_UNET, SD_VAE, random_init

TINY_UNET = dict(SD15_UNET, model_channels=32)
TINY_VAE = dict(SD_VAE, ch=32, num_res_blocks=1)
TINY_TEXT = {"num_hidden_layers": 1, "intermediate_size": 64}  # width stays 768: the UNet's text context
# ViT-L/14's tokens (257 x 1024 at 224 px), which DEADiff reads, from two narrow blocks
TINY_VISION = {"attention_dropout": 0.0, "dropout": 0.0, "hidden_act": "quick_gelu", "hidden_size": 1024, "image_size": 224,
               "intermediate_size": 64, "layer_norm_eps": 1e-5, "model_type": "clip_vision_model", "num_attention_heads": 16,
               "num_channels": 3, "num_hidden_layers": 2, "patch_size": 14, "projection_dim": 16}


def tiny_unet(seed=0):
    import comfy.model_patcher
    import comfy.supported_models

    config = comfy.supported_models.SD15(dict(TINY_UNET, dtype=torch.float32))
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({}, device="cpu")
    random_init(model.diffusion_model, seed, fan_in=True)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu")), config


def tiny_clip_vision(seed=0):
    import comfy.clip_vision

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(TINY_VISION, f)
    try:
        clip_vision = comfy.clip_vision.ClipVisionModel(f.name)
    finally:
        os.unlink(f.name)
    random_init(clip_vision.model, seed, fan_in=True)
    return clip_vision


def tiny_backbone(seed=0, with_clip_vision=True):
    import comfy.sd

    import comfy.ldm.models.autoencoder

    model, config = tiny_unet(seed)
    autoencoder = random_init(comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=TINY_VAE, embed_dim=4), seed + 1, fan_in=True)
    vae = comfy.sd.VAE(sd=autoencoder.state_dict(), config={"params": {"ddconfig": TINY_VAE, "embed_dim": 4}}, dtype=torch.float32)
    clip = comfy.sd.CLIP(config.clip_target(), model_options={"clip_l_model_config": TINY_TEXT, "dtype": torch.float32})
    random_init(clip.cond_stage_model, seed + 2, fan_in=True)
    return Backbone(model, clip, vae, tiny_clip_vision(seed + 3) if with_clip_vision else None)
