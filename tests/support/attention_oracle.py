"""docs/DESIGN.md, Injection, written out from the layer map (support.layout_spec, not the pack's table): each
cross-attention layer's attn2 in a ComfyUI UNet replaced by one softmax over the text keys/values and the image
ones, in float64. test_injection.py and test_train_injection.py compare the pack's patches against it."""
from contextlib import contextmanager

import torch

from support.layout_spec import SPEC_LAYERS


def spec_attn2_path(block):
    return f"{block}.transformer_blocks.0.attn2"


def spec_image_projections(official, block):
    """(i_to_k, i_to_v) weights of the layer at `block` in an official state dict."""
    prefix = f"model.diffusion_model.{spec_attn2_path(block)}."
    return official[prefix + "i_to_k.weight"], official[prefix + "i_to_v.weight"]


@contextmanager
def written_out_attention(diffusion_model, official, image_tokens):
    """Inside, each of the 16 attn2 modules computes

        K = [to_k(text); k_rows i_to_k^T],  V = [to_v(text); v_rows i_to_v^T],  to_out(softmax(Q K^T / sqrt(d)) V)

    with i_to_k / i_to_v from `official` and (k_rows, v_rows) = image_tokens(layer index, branch): the image
    tokens [B, T, 768] the layer's keys and values are projected from, weights applied (zero rows: no image)."""
    replaced = []

    def make_forward(attn2, index, block, branch):
        w_k, w_v = spec_image_projections(official, block)

        def forward(x, context=None, value=None, mask=None, transformer_options={}):
            q, k, v = attn2.to_q(x), attn2.to_k(context), attn2.to_v(context)
            k_rows, v_rows = image_tokens(index, branch)
            keys = torch.cat([k, k_rows @ w_k.T], 1).double()
            values = torch.cat([v, v_rows @ w_v.T], 1).double()
            heads, d = attn2.heads, q.shape[-1] // attn2.heads
            qh, kh, vh = (t.reshape(t.shape[0], t.shape[1], heads, d).transpose(1, 2) for t in (q.double(), keys, values))
            probabilities = torch.softmax(qh @ kh.transpose(-1, -2) / d ** 0.5, dim=-1)
            out = (probabilities @ vh).transpose(1, 2).reshape(q.shape[0], q.shape[1], -1)
            return attn2.to_out(out.float())
        return forward

    try:
        for index, (_, block, _, branch) in enumerate(SPEC_LAYERS):
            attn2 = diffusion_model.get_submodule(spec_attn2_path(block))
            attn2.forward = make_forward(attn2, index, block, branch)
            replaced.append(attn2)
        yield
    finally:
        for attn2 in replaced:
            del attn2.forward
