"""An independent DEADiff branch encoder: transformers' InstructBlipQFormerModel with the official weights
mapped in, plus a written-out ln_vision and BLIP-Diffusion's ProjLayer."""
import torch
import torch.nn.functional as F
from transformers import InstructBlipQFormerConfig, InstructBlipQFormerModel

# "[CLS] style [SEP]" / "[CLS] content [SEP]" in bert-base-uncased, as docs/DESIGN.md, Encoder lists them
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
