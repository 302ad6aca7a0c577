"""Where training starts: random weights, an existing DEADiff checkpoint (fine-tuning), or
BLIP-Diffusion's Q-Former and ProjLayer in both branches. Random and BLIP-Diffusion starts
initialise each i_to_k / i_to_v as a copy of its layer's to_k / to_v (docs/DESIGN.md, Training)."""
import logging
from dataclasses import dataclass

import torch

from ..checkpoint import adapter_from_state_dict, load_adapter
from ..encoder import DEADiffEncoder
from ..layers import BRANCHES, SD15_LAYERS
from ..projections import ImageProjections
from ..qformer import QFormerConfig
from .blip_diffusion import as_deadiff_layout, read_blip_diffusion

log = logging.getLogger("deadiff")


@dataclass
class StartingPoint:
    encoder: DEADiffEncoder         # both branches, float32, CPU
    projections: ImageProjections   # all 16 layers
    vision_state_dict: dict         # the start's own ViT (LAVIS layout), or None
    description: str


def _text_projections(unet):
    """{layer index: (to_k.weight, to_v.weight)} of the UNet's 16 cross-attention layers."""
    out = {}
    for layer in SD15_LAYERS:
        attn2 = unet.get_submodule(layer.attn2_path)
        out[layer.index] = (attn2.to_k.weight.detach().float().cpu(), attn2.to_v.weight.detach().float().cpu())
    return out


def _check_token_width(width, unet, what):
    context = unet.get_submodule(SD15_LAYERS[0].attn2_path).to_k.in_features
    if width != context:
        raise ValueError(f"{what}: tokens are {width} wide but the UNet's text context is {context}; "
                         "i_to_k / i_to_v cannot start as copies of to_k / to_v")


def _bert_init(module, generator):
    """BERT's initialisation: Linear and Embedding N(0, 0.02), zero biases, LayerNorm (1, 0)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * 0.02)
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.fill_(1.0)
            if getattr(m, "bias", None) is not None:
                m.bias.zero_()
        for name, p in module.named_parameters():
            if name.endswith("query_tokens"):
                p.copy_(torch.randn(p.shape, generator=generator) * 0.02)


def random_start(start_config, unet, seed):
    config = QFormerConfig(**start_config.qformer)
    _check_token_width(config.hidden_size, unet, "random start")
    encoder = DEADiffEncoder(config, start_config.proj_hidden, BRANCHES, dtype=torch.float32)
    _bert_init(encoder, torch.Generator().manual_seed(seed))
    text = _text_projections(unet)
    projections = ImageProjections({i: k.shape[0] for i, (k, _) in text.items()}, config.hidden_size, dtype=torch.float32)
    with torch.no_grad():
        for index, (k, v) in text.items():
            projections[index].i_to_k.weight.copy_(k)
            projections[index].i_to_v.weight.copy_(v)
    return StartingPoint(encoder, projections, None, f"random Q-Formers ({config.num_layers} layers), i_to_k/v from to_k/v")


def deadiff_start(path, unet):
    adapter = load_adapter(path, dtype=torch.float32, device="cpu")
    missing = [b for b in BRANCHES if b not in adapter.info.branches]
    if missing:
        raise ValueError(f"{path}: has no {' / '.join(missing)} branch; DEADiff training needs both")
    return StartingPoint(adapter.encoder, adapter.projections, adapter.vision_state_dict,
                         f"DEADiff weights from {path} ({adapter.info.describe()})")


def blip_diffusion_start(path, unet):
    sd = as_deadiff_layout(read_blip_diffusion(path))
    queries = sd.get("style_blip.query_tokens")
    if queries is not None:  # else the loader below names the missing key
        _check_token_width(queries.shape[-1], unet, f"{path} (BLIP-Diffusion)")
    for index, (k, v) in _text_projections(unet).items():
        sd.update(zip(SD15_LAYERS[index].image_projection_keys, (k, v)))
    adapter = adapter_from_state_dict(sd, path, "BLIP-Diffusion", dtype=torch.float32, device="cpu")
    return StartingPoint(adapter.encoder, adapter.projections, adapter.vision_state_dict,
                         f"BLIP-Diffusion Q-Former and ProjLayer from {path} in both branches, i_to_k/v from to_k/v")


def load_start(start_config, unet, resolve, seed):
    if start_config.source == "random":
        start = random_start(start_config, unet, seed)
    elif start_config.source == "deadiff":
        start = deadiff_start(resolve(start_config.path), unet)
    else:
        start = blip_diffusion_start(resolve(start_config.path), unet)
    return make_trainable(start)


def make_trainable(start):
    """Trainable: both Q-Formers with their query tokens and ProjLayers, all i_to_k/v. Frozen: ln_vision."""
    start.encoder.requires_grad_(True).train()
    start.projections.requires_grad_(True).train()
    for branch in start.encoder.branches.values():
        branch.ln_vision.requires_grad_(False)
    return start
