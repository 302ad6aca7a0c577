"""Random-weight Stable Diffusion 1.5 at its full architecture, built with ComfyUI's own classes:
an in-process MODEL, or a checkpoint file that ComfyUI's Load Checkpoint detects as SD1.5; and
an SDXL-family UNet file (Segmind Vega's shape, the smallest) for refusal tests."""
import torch
from safetensors.torch import save_file

from deadiff_core.sd15 import SD15_UNET, SD_VAE, random_init


def sd15_unet_model(comfy, seed=0, std=0.05):
    """A ModelPatcher around a random SD1.5 BaseModel on the CPU, as Load Checkpoint would give."""
    import comfy.model_detection
    import comfy.model_patcher

    config = comfy.model_detection.model_config_from_unet_config(dict(SD15_UNET, dtype=torch.float32))
    config.set_inference_dtype(torch.float32, torch.float32)
    model = config.get_model({}, device="cpu")
    random_init(model.diffusion_model, seed, std)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def sd15_checkpoint(comfy, path, seed=0, dtype=torch.float16):
    """A full SD1.5 checkpoint file (UNet + VAE + CLIP-L text encoder) with random weights."""
    import comfy.ldm.models.autoencoder
    import comfy.sd1_clip

    unet = sd15_unet_model(comfy, seed).model.diffusion_model
    vae = random_init(comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=SD_VAE, embed_dim=4), seed + 1)
    clip = random_init(comfy.sd1_clip.SDClipModel(dtype=torch.float32), seed + 2, std=0.02)
    sd = {}
    for prefix, module in (("model.diffusion_model.", unet), ("first_stage_model.", vae), ("cond_stage_model.", clip)):
        sd.update({prefix + k: v.to(dtype) if v.is_floating_point() else v for k, v in module.state_dict().items()})
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))


# Segmind Vega: SDXL's architecture with fewer transformer blocks (context 2048, like SDXL)
VEGA_UNET = dict(SD15_UNET, num_res_blocks=[2, 2, 2], channel_mult=[1, 2, 4], transformer_depth=[0, 0, 1, 1, 2, 2],
                 transformer_depth_middle=0, transformer_depth_output=[0, 0, 0, 1, 1, 1, 2, 2, 2], num_heads=-1,
                 num_head_channels=64, num_classes="sequential", use_linear_in_transformer=True, context_dim=2048,
                 adm_in_channels=2816)


def sdxl_shaped_unet_file(comfy, path):
    """A UNet-only file (zeros, fp16) that ComfyUI's Load Diffusion Model detects as an SDXL-family model."""
    import comfy.model_detection

    config = comfy.model_detection.model_config_from_unet_config(dict(VEGA_UNET, dtype=torch.float16))
    shapes = config.get_model({}, device="meta").diffusion_model.state_dict()
    save_file({k: torch.zeros(v.shape, dtype=torch.float16) for k, v in shapes.items()}, str(path))


def sd15_controlnet_file(comfy, path, seed=0):
    """A random SD1.5 ControlNet in the original control_model.* layout (fp16), as ControlNetLoader reads it."""
    import comfy.cldm.cldm
    import comfy.ops

    config = {k: v for k, v in SD15_UNET.items() if k != "out_channels"}
    net = comfy.cldm.cldm.ControlNet(hint_channels=3, dtype=torch.float32, device="cpu",
                                     operations=comfy.ops.disable_weight_init, **config)
    random_init(net, seed)
    save_file({"control_model." + k: v.to(torch.float16).contiguous() for k, v in net.state_dict().items()}, str(path))


def sd15_lora_file(path, seed=0, rank=4):
    """A random kohya-format LoRA on every attn1/attn2 q/k/v of the SD1.5 UNet."""
    generator = torch.Generator().manual_seed(seed)
    sd = {}
    for block, channels in (("input_blocks_1_1", 320), ("input_blocks_4_1", 640), ("middle_block_1", 1280),
                            ("output_blocks_9_1", 320)):
        for attn, source in (("attn1", channels), ("attn2", 768)):
            for proj in ("to_q", "to_k", "to_v"):
                name = f"lora_unet_{block}_transformer_blocks_0_{attn}_{proj}"
                width = channels if proj == "to_q" else source
                sd[f"{name}.lora_down.weight"] = torch.randn(rank, width, generator=generator) * 0.1
                sd[f"{name}.lora_up.weight"] = torch.randn(channels, rank, generator=generator) * 0.1
                sd[f"{name}.alpha"] = torch.tensor(float(rank))
    save_file(sd, str(path))
