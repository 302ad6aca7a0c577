"""Random-weight state dicts in the official `deadiff_v1.ckpt` layout, for tests and benchmarks.

Written key by key from docs/DESIGN.md, Checkpoint (not derived from this package's modules), so that
checking the modules against it is a real check. Real weights cannot be downloaded here; these
files exercise the same loading code at any size, up to the full 7.43 GB layout.
"""
from collections import OrderedDict
from dataclasses import dataclass

import torch

from .layers import SD15_LAYERS

SCHEDULE_BUFFERS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2",
)


@dataclass(frozen=True)
class OfficialLayout:
    vision_width: int = 1024
    vision_blocks: int = 23
    patch_size: int = 14
    image_size: int = 224
    hidden: int = 768
    qformer_layers: int = 12
    intermediate: int = 3072
    vocab: int = 30523
    positions: int = 512
    queries: int = 16
    proj_hidden: int = 3072
    unet_channels: int = 320        # layer widths are 1x, 2x, 4x this (see layers.py)
    embed_dim: int = 256            # vision_proj / text_proj width (unused at inference)

    @property
    def vision_tokens(self):
        return (self.image_size // self.patch_size) ** 2 + 1

    def layer_channels(self, layer):
        return layer.channels // 320 * self.unet_channels


TINY = OfficialLayout(vision_width=32, vision_blocks=2, patch_size=14, image_size=28, hidden=64, qformer_layers=2,
                      intermediate=96, vocab=4200, positions=16, queries=4, proj_hidden=80, unet_channels=8, embed_dim=16)

# The smallest file ComfyUI runs end to end: its CLIP vision only takes a ViT-L/14 at full width, and SD1.5's
# layers need the real token and projection widths. One stored ViT block is enough (the missing ones become
# zero blocks that ComfyUI still computes); the Q-Formers shrink to one layer.
VIT_L_TINY = OfficialLayout(vision_blocks=1, qformer_layers=1, intermediate=64, vocab=4200, positions=16, proj_hidden=64)


class _Random:
    def __init__(self, seed, scale, device):
        self.generator = torch.Generator().manual_seed(seed)
        self.scale = scale
        self.device = device

    def __call__(self, *shape, dtype=torch.float32):
        if self.device == "meta":  # shapes only: the full layout without allocating 7 GB
            return torch.empty(*shape, dtype=dtype, device="meta")
        return (torch.randn(*shape, generator=self.generator) * self.scale).to(dtype)

    def norm(self, width, dtype=torch.float32):
        """LayerNorm weight and bias near (1, 0), like trained ones."""
        return 1 + self(width, dtype=dtype), self(width, dtype=dtype)


def _linear(sd, prefix, rnd, out_f, in_f, dtype=torch.float32, bias=True):
    sd[prefix + "weight"] = rnd(out_f, in_f, dtype=dtype)
    if bias:
        sd[prefix + "bias"] = rnd(out_f, dtype=dtype)


def _norm(sd, prefix, rnd, width):
    sd[prefix + "weight"], sd[prefix + "bias"] = rnd.norm(width)


def vision_encoder(L, rnd):
    """LAVIS clip_vit: 23 OpenAI-CLIP blocks, no ln_post; Conv/Linear fp16, the rest fp32."""
    W, half, sd = L.vision_width, torch.float16, {}
    sd["conv1.weight"] = rnd(W, 3, L.patch_size, L.patch_size, dtype=half)
    sd["class_embedding"] = rnd(W)
    sd["positional_embedding"] = rnd(L.vision_tokens, W)
    _norm(sd, "ln_pre.", rnd, W)
    for i in range(L.vision_blocks):
        p = f"transformer.resblocks.{i}."
        _linear(sd, p + "attn.in_proj_", rnd, 3 * W, W)
        _linear(sd, p + "attn.out_proj.", rnd, W, W, half)
        _norm(sd, p + "ln_1.", rnd, W)
        _norm(sd, p + "ln_2.", rnd, W)
        _linear(sd, p + "mlp.c_fc.", rnd, 4 * W, W, half)
        _linear(sd, p + "mlp.c_proj.", rnd, W, 4 * W, half)
    return sd


def qformer_bert(L, rnd):
    H, sd = L.hidden, {}
    sd["embeddings.word_embeddings.weight"] = rnd(L.vocab, H)
    sd["embeddings.position_embeddings.weight"] = rnd(L.positions, H)
    _norm(sd, "embeddings.LayerNorm.", rnd, H)
    sd["embeddings.position_ids"] = torch.arange(L.positions).unsqueeze(0)
    for i in range(L.qformer_layers):
        p = f"encoder.layer.{i}."
        for name in ("query", "key", "value"):
            _linear(sd, p + f"attention.self.{name}.", rnd, H, H)
        _linear(sd, p + "crossattention.self.query.", rnd, H, H)
        for name in ("key", "value"):
            _linear(sd, p + f"crossattention.self.{name}.", rnd, H, L.vision_width)
        for block in ("attention", "crossattention"):
            _linear(sd, p + f"{block}.output.dense.", rnd, H, H)
            _norm(sd, p + f"{block}.output.LayerNorm.", rnd, H)
        for suffix in ("", "_query"):
            _linear(sd, p + f"intermediate{suffix}.dense.", rnd, L.intermediate, H)
            _linear(sd, p + f"output{suffix}.dense.", rnd, H, L.intermediate)
            _norm(sd, p + f"output{suffix}.LayerNorm.", rnd, H)
    return sd


def blip(L, rnd, vision):
    """A full LAVIS Blip2Qformer, unused heads included (cls decoder tied to word embeddings)."""
    sd = {f"visual_encoder.{k}": v.clone() for k, v in (vision or {}).items()}
    _norm(sd, "ln_vision.", rnd, L.vision_width)
    sd["query_tokens"] = rnd(1, L.queries, L.hidden)
    bert = qformer_bert(L, rnd)
    sd.update({f"Qformer.bert.{k}": v for k, v in bert.items()})
    cls = "Qformer.cls.predictions."
    sd[cls + "bias"] = rnd(L.vocab)
    _linear(sd, cls + "transform.dense.", rnd, L.hidden, L.hidden)
    _norm(sd, cls + "transform.LayerNorm.", rnd, L.hidden)
    sd[cls + "decoder.weight"] = bert["embeddings.word_embeddings.weight"]  # tied: shared storage
    sd[cls + "decoder.bias"] = sd[cls + "bias"]
    _linear(sd, "vision_proj.", rnd, L.embed_dim, L.hidden)
    _linear(sd, "text_proj.", rnd, L.embed_dim, L.hidden)
    _linear(sd, "itm_head.", rnd, 2, L.hidden)
    sd["temp"] = torch.tensor(0.07)
    return sd


def proj_layer(L, rnd):
    sd = {}
    _norm(sd, "LayerNorm.", rnd, L.hidden)
    _linear(sd, "dense1.", rnd, L.proj_hidden, L.hidden)
    _linear(sd, "dense2.", rnd, L.hidden, L.proj_hidden)
    return sd


def image_projections(L, rnd):
    sd = {}
    for layer in SD15_LAYERS:
        for key in layer.image_projection_keys:
            sd[key] = rnd(L.layer_channels(layer), L.hidden)
    return sd


def official_state_dict(layout=TINY, seed=0, scale=0.02, branches=("style", "content"), with_vision=True,
                        with_other_parts=True, device="cpu"):
    """A DEADiff state dict as `deadiff_v1.ckpt["state_dict"]` holds it (random weights, BERT's init scale).

    `with_other_parts` adds a few stand-ins for what the loader must ignore: UNet, VAE and text
    encoder keys, the schedule buffers and `ctx_embeddings_cache`.
    """
    rnd = _Random(seed, scale, device)
    vision = vision_encoder(layout, rnd) if with_vision else None  # frozen: both branches hold equal copies
    sd = {}
    for branch in branches:
        sd.update({f"{branch}_blip.{k}": v for k, v in blip(layout, rnd, vision).items()})
        sd.update({f"{branch}_proj_layer.{k}": v for k, v in proj_layer(layout, rnd).items()})
    if branches:
        sd.update(image_projections(layout, rnd))
    if with_other_parts:
        for layer in SD15_LAYERS:
            sd[layer.checkpoint_key("to_k.weight")] = rnd(layout.layer_channels(layer), layout.hidden)
        sd["first_stage_model.encoder.conv_in.weight"] = rnd(8, 3, 3, 3)
        sd["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"] = rnd(16, layout.hidden)
        sd.update({name: rnd(1000, dtype=torch.float64).abs() for name in SCHEDULE_BUFFERS})
        sd["ctx_embeddings_cache"] = rnd(1, layout.queries, layout.hidden)
    return sd


def save_official_checkpoint(path, state_dict):
    """Save like the official file: a zip-pickle of {"state_dict": OrderedDict}."""
    torch.save({"state_dict": OrderedDict(state_dict)}, path)
