"""DEADiff's embedded vision tower, made into a standard CLIP ViT-L/14 state dict.

The checkpoint's `visual_encoder` is LAVIS's clip_vit: OpenAI CLIP naming (fused in_proj q/k/v),
but only 23 of ViT-L's 24 blocks and no ln_post / proj, because DEADiff reads the penultimate
hidden state. Completing it with an identity 24th block, a unit ln_post and a zero projection gives
the full OpenAI layout that ComfyUI's CLIP-vision loader knows, with nothing uninitialised; the
penultimate output, the only one DEADiff reads, does not depend on the padding.
"""
import torch

VIT_L_BLOCKS = 24
VIT_L_PROJECTION_DIM = 768


def complete_vit_l(vision_state_dict):
    """23-block LAVIS ViT-L (OpenAI names) -> full 24-block OpenAI CLIP ViT-L vision state dict."""
    sd = dict(vision_state_dict)
    blocks = {int(k.split(".")[2]) for k in sd if k.startswith("transformer.resblocks.")}
    if not blocks or sd.get("class_embedding") is None:
        raise ValueError("not an OpenAI-layout CLIP vision state dict (no transformer.resblocks.* / class_embedding)")
    width = sd["class_embedding"].shape[0]
    template = {k.split(".", 3)[3]: v for k, v in sd.items() if k.startswith(f"transformer.resblocks.{min(blocks)}.")}
    for block in range(max(blocks) + 1, VIT_L_BLOCKS):
        # all-zero weights: both residual branches add exactly 0, so the block is the identity
        sd.update({f"transformer.resblocks.{block}.{name}": torch.zeros_like(t) for name, t in template.items()})
    sd.setdefault("ln_post.weight", torch.ones(width, dtype=sd["ln_pre.weight"].dtype))
    sd.setdefault("ln_post.bias", torch.zeros(width, dtype=sd["ln_pre.bias"].dtype))
    sd.setdefault("proj", torch.zeros(width, VIT_L_PROJECTION_DIM, dtype=sd["ln_pre.weight"].dtype))
    return sd
