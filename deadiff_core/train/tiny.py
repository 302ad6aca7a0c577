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

from .backbone import Backbone

TINY_UNET = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
             "adm_in_channels": None, "in_channels": 4, "model_channels": 32, "num_res_blocks": [2, 2, 2, 2],
             "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1,
             "use_linear_in_transformer": False, "context_dim": 768, "num_heads": 8,
             "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
             "use_temporal_attention": False, "use_temporal_resblock": False}
TINY_VAE = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 32, "ch_mult": [1, 2, 4, 4],
            "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
TINY_TEXT = {"num_hidden_layers": 1, "intermediate_size": 64}  # width stays 768: the UNet's text context
TINY_VISION = {"attention_dropout": 0.0, "dropout": 0.0, "hidden_act": "quick_gelu", "hidden_size": 32, "image_size": 28,
               "intermediate_size": 64, "layer_norm_eps": 1e-5, "model_type": "clip_vision_model", "num_attention_heads": 2,
               "num_channels": 3, "num_hidden_layers": 2, "patch_size": 14, "projection_dim": 16}


def seeded_init(module, seed):
    """ComfyUI builds its modules without initialising them. Weights N(0, 1 / fan_in), as a
    healthy random network has (attention logits of order 1, not saturated), biases near 0,
    norm scales near 1."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if p.ndim >= 2:
                p.copy_(noise / p[0].numel() ** 0.5)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.05 * noise)
            else:
                p.copy_(0.05 * noise)
    return module


def tiny_unet(seed=0):
    import comfy.model_patcher
    import comfy.supported_models

    config = comfy.supported_models.SD15(dict(TINY_UNET, dtype=torch.float32))
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({}, device="cpu")
    seeded_init(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu")), config


def tiny_clip_vision(seed=0):
    import comfy.clip_vision

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(TINY_VISION, f)
    try:
        clip_vision = comfy.clip_vision.ClipVisionModel(f.name)
    finally:
        os.unlink(f.name)
    seeded_init(clip_vision.model, seed)
    return clip_vision


def tiny_backbone(seed=0, with_clip_vision=True):
    import comfy.sd

    import comfy.ldm.models.autoencoder

    model, config = tiny_unet(seed)
    autoencoder = seeded_init(comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=TINY_VAE, embed_dim=4), seed + 1)
    vae = comfy.sd.VAE(sd=autoencoder.state_dict(), config={"params": {"ddconfig": TINY_VAE, "embed_dim": 4}}, dtype=torch.float32)
    clip = comfy.sd.CLIP(config.clip_target(), model_options={"clip_l_model_config": TINY_TEXT, "dtype": torch.float32})
    seeded_init(clip.cond_stage_model, seed + 2)
    return Backbone(model, clip, vae, tiny_clip_vision(seed + 3) if with_clip_vision else None)
