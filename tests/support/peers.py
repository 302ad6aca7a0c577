"""Other node packs users run in the same graphs as DEADiff, as their unmodified source (a developer's
and CI's ../shared/peers; a clone from the web has none), and random-weight model files in the layouts
those packs read."""
import os
import tarfile

import torch
from safetensors.torch import save_file

from support.paths import REPO_ROOT

PEERS = os.path.join(os.path.dirname(REPO_ROOT), "shared", "peers")
IPADAPTER_ARCHIVE = os.path.join(PEERS, "ComfyUI_IPAdapter_plus-9d076a3.tar.gz")
IPADAPTER_FILE, CLIP_VISION_H_FILE = "ip-adapter_sd15.safetensors", "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"
# IPAdapter_plus's SD1.5 layer order (its module keys 1, 3, ..., 31): input 1 2 4 5 7 8, output 3-11, middle
IPADAPTER_SD15_CHANNELS = (320, 320, 640, 640, 1280, 1280, 1280, 1280, 1280, 640, 640, 640, 320, 320, 320, 1280)


def extract_ipadapter(custom_nodes):
    """ComfyUI_IPAdapter_plus into custom_nodes/ (its archive's top folder), or None without ../shared/peers."""
    if not os.path.isfile(IPADAPTER_ARCHIVE):
        return None
    with tarfile.open(IPADAPTER_ARCHIVE) as archive:
        archive.extractall(custom_nodes, filter="data")
    return os.path.join(custom_nodes, "ComfyUI_IPAdapter_plus")


def _random(shape, generator, std, dtype=torch.float16):
    return (torch.randn(shape, generator=generator) * std).to(dtype)


def ipadapter_sd15_file(path, seed=0, std=0.05):
    """ip-adapter_sd15.safetensors' layout: a linear projection of the 1024-wide CLIP-H image embedding to 4
    tokens of 768, and to_k_ip / to_v_ip per cross-attention layer (fp16)."""
    g = torch.Generator().manual_seed(seed)
    sd = {"image_proj.proj.weight": _random((4 * 768, 1024), g, std), "image_proj.proj.bias": _random((4 * 768,), g, std),
          "image_proj.norm.weight": 1 + _random((768,), g, std), "image_proj.norm.bias": _random((768,), g, std)}
    for number, channels in enumerate(IPADAPTER_SD15_CHANNELS):
        for name in ("to_k_ip", "to_v_ip"):
            sd[f"ip_adapter.{number * 2 + 1}.{name}.weight"] = _random((channels, 768), g, std)
    save_file(sd, str(path))


def clip_vision_h_file(path, seed=0, std=0.02):
    """CLIP ViT-H/14 (laion2B) image encoder as IP-Adapter ships it: transformers' CLIPVisionModelWithProjection
    keys, fp16, random (norm scales near 1); ComfyUI's CLIPVisionLoader detects it as ViT-H by its 32 blocks."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                              patch_size=14, image_size=224, projection_dim=1024, hidden_act="gelu")
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in CLIPVisionModelWithProjection(config).state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    sd = {k: 1 + _random(shape, g, std) if "norm" in k and k.endswith("weight") else _random(shape, g, std)
          for k, shape in shapes.items()}
    save_file(sd, str(path))
