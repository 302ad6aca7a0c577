"""The encoder against an independent implementation (qformer_oracle.py: transformers' Q-Former with the
official weights mapped in, plus a written-out ln_vision and ProjLayer)."""
import pytest
import torch

from deadiff_core.checkpoint import adapter_from_state_dict
from deadiff_core.synthetic import TINY, OfficialLayout, official_state_dict
from support.qformer_oracle import TOKEN_IDS, reference_tokens


@pytest.mark.no_comfyui
@pytest.mark.parametrize("layout", [pytest.param(TINY, id="tiny", marks=pytest.mark.fast),
                                    pytest.param(OfficialLayout(), id="full-size")])
def test_tokens_match_transformers_qformer(layout):
    sd = official_state_dict(layout, seed=1, with_vision=False, with_other_parts=False)
    adapter = adapter_from_state_dict(sd, "<memory>", "official checkpoint")
    vision_hidden = torch.randn(2, layout.vision_tokens, layout.vision_width, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        tokens = adapter.encoder(vision_hidden)
    for branch in ("style", "content"):
        expected = reference_tokens(sd, branch, layout, vision_hidden)
        assert tokens[branch].shape == (2, layout.queries, layout.hidden)
        assert (tokens[branch] - expected).abs().max().item() <= 1e-5, branch
    # the two branches read the same image but are told different words and have their own weights
    assert not torch.allclose(tokens["style"], tokens["content"])


@pytest.mark.no_comfyui
@pytest.mark.fast
def test_text_word_reaches_the_queries():
    """Text states feed the queries through self-attention: changing the word changes the tokens."""
    sd = official_state_dict(TINY, seed=3, with_vision=False, with_other_parts=False)
    adapter = adapter_from_state_dict(sd, "<memory>", "official checkpoint")
    branch = adapter.encoder.branches["style"]
    vision_hidden = torch.randn(1, TINY.vision_tokens, TINY.vision_width)
    with torch.no_grad():
        style_word = branch(vision_hidden)
        branch.token_ids = tuple(TOKEN_IDS["content"])
        content_word = branch(vision_hidden)
    assert (style_word - content_word).abs().max() > 1e-4


@pytest.mark.fast
def test_comfy_operations_plug_in(comfy):
    """ComfyUI's manual_cast ops: weights stored in fp16, computed in the input's dtype."""
    sd = official_state_dict(TINY, seed=4, with_vision=False, with_other_parts=False)
    sd = {k: v.half().float() if v.is_floating_point() else v for k, v in sd.items()}  # fp16-exact values
    plain = adapter_from_state_dict(sd, "<memory>", "official checkpoint")
    cast = adapter_from_state_dict(sd, "<memory>", "official checkpoint", dtype=torch.float16,
                                   operations=comfy.ops.manual_cast)
    assert {p.dtype for p in cast.encoder.parameters()} == {torch.float16}
    vision_hidden = torch.randn(2, TINY.vision_tokens, TINY.vision_width)
    with torch.no_grad():
        a, b = plain.encoder(vision_hidden), cast.encoder(vision_hidden)
    for branch in a:
        assert b[branch].dtype == torch.float32
        assert (a[branch] - b[branch]).abs().max() <= 1e-5
