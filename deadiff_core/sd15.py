"""SD1.5 as ComfyUI builds it, for what builds one without a checkpoint file (the tiny training backbone, the
training memory estimate, the random-weight files of tests and benchmarks): its UNet and VAE configurations,
and random weights for the modules ComfyUI leaves uninitialised."""
import torch

# comfy/model_detection.py's SD15 UNet configuration
SD15_UNET = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
             "adm_in_channels": None, "in_channels": 4, "model_channels": 320, "num_res_blocks": [2, 2, 2, 2],
             "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1,
             "use_linear_in_transformer": False, "context_dim": 768, "num_heads": 8,
             "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
             "use_temporal_attention": False, "use_temporal_resblock": False}
# the SD VAE's ddconfig (comfy.ldm.models.autoencoder.AutoencoderKL, embed_dim 4)
SD_VAE = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128, "ch_mult": [1, 2, 4, 4],
          "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}


def random_init(module, seed, std=0.05, fan_in=False):
    """Fill every parameter (ComfyUI builds its modules without initialising them): norm scales near 1, the
    rest N(0, std); with fan_in, weights N(0, 1 / fan_in) instead, as a healthy random network has them
    (attention logits of order 1, not saturated)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if fan_in and p.ndim >= 2:
                p.copy_(noise / p[0].numel() ** 0.5)
            elif p.ndim == 1 and "norm" in name and name.endswith("weight"):
                p.copy_(1 + std * noise)
            else:
                p.copy_(std * noise)
    return module
