"""The encoder against an independent implementation: transformers' InstructBlipQFormerModel with
the official weights mapped in, plus a written-out ln_vision and ProjLayer (DEADIFF_SPEC.md §1)."""
import pytest
import torch
import torch.nn.functional as F
from transformers import InstructBlipQFormerConfig, InstructBlipQFormerModel

from deadiff_core.checkpoint import adapter_from_state_dict
from deadiff_core.synthetic import TINY, OfficialLayout, official_state_dict

# "[CLS] style [SEP]" / "[CLS] content [SEP]" in bert-base-uncased, as the spec lists them
TOKEN_IDS = {"style": [101, 2806, 102], "content": [101, 4180, 102]}


def hf_qformer(sd, branch, layout):
    config = InstructBlipQFormerConfig(
        vocab_size=layout.vocab, hidden_size=layout.hidden, num_hidden_layers=layout.qformer_layers,
        num_attention_heads=layout.hidden // 64, intermediate_size=layout.intermediate, hidden_act="gelu",
        layer_norm_eps=1e-12, max_position_embeddings=layout.positions, cross_attention_frequency=1,
        encoder_hidden_size=layout.vision_width)
    config._attn_implementation = "eager"
    model = InstructBlipQFormerModel(config).eval()
    prefix = f"{branch}_blip.Qformer.bert."
    weights = {
        k[len(prefix):].replace(".self.", ".attention.").replace("embeddings.LayerNorm", "embeddings.layernorm"): v
        for k, v in sd.items() if k.startswith(prefix) and not k.endswith("position_ids")
    }
    model.load_state_dict(weights, strict=True)
    return model


def reference_tokens(sd, branch, layout, vision_hidden):
    blip, proj = f"{branch}_blip.", f"{branch}_proj_layer."
    image = F.layer_norm(vision_hidden, (layout.vision_width,), sd[blip + "ln_vision.weight"], sd[blip + "ln_vision.bias"], eps=1e-5)
    batch = vision_hidden.shape[0]
    queries = sd[blip + "query_tokens"].expand(batch, -1, -1)
    ids = torch.tensor([TOKEN_IDS[branch]]).expand(batch, -1)
    with torch.no_grad():
        out = hf_qformer(sd, branch, layout)(input_ids=ids, query_embeds=queries, encoder_hidden_states=image)
    x = out.last_hidden_state[:, : layout.queries]
    h = F.layer_norm(x, (layout.hidden,), sd[proj + "LayerNorm.weight"], sd[proj + "LayerNorm.bias"], eps=1e-12)
    h = h @ sd[proj + "dense1.weight"].T + sd[proj + "dense1.bias"]
    h = h * torch.sigmoid(1.702 * h)  # QuickGELU
    return x + h @ sd[proj + "dense2.weight"].T + sd[proj + "dense2.bias"]


@pytest.mark.parametrize("layout", [TINY, OfficialLayout()], ids=["tiny", "full-size"])
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
