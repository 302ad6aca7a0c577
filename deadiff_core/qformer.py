"""The BLIP-2 / BLIP-Diffusion Q-Former (a BERT-base variant), as DEADiff uses it.

Module and parameter names mirror LAVIS's `Qformer.bert` so the official weights load with a
prefix change only. What differs from a plain BERT (docs/DESIGN.md, Encoder):
- 16 learned query tokens are prepended to the text and get no position embedding;
- every layer cross-attends from the query positions only to the image tokens;
- query and text positions have separate feed-forward weights.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class QFormerConfig:
    hidden_size: int = 768
    num_layers: int = 12
    intermediate_size: int = 3072
    vision_width: int = 1024
    vocab_size: int = 30523
    max_positions: int = 512
    num_query_tokens: int = 16
    head_dim: int = 64          # BLIP-2 Q-Formers keep BERT's 64-wide heads
    layer_norm_eps: float = 1e-12

    @property
    def num_heads(self):
        return self.hidden_size // self.head_dim


class SelfOrCrossAttention(torch.nn.Module):
    """Multi-head attention projections; named `self` inside BERT's attention block."""

    def __init__(self, hidden, kv_width, heads, dtype, device, operations):
        super().__init__()
        self.heads = heads
        self.query = operations.Linear(hidden, hidden, dtype=dtype, device=device)
        self.key = operations.Linear(kv_width, hidden, dtype=dtype, device=device)
        self.value = operations.Linear(kv_width, hidden, dtype=dtype, device=device)

    def forward(self, x, context):
        def split_heads(t):
            return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

        q, k, v = split_heads(self.query(x)), split_heads(self.key(context)), split_heads(self.value(context))
        out = F.scaled_dot_product_attention(q, k, v)
        return out.transpose(1, 2).flatten(2)


class ResidualOutput(torch.nn.Module):
    """Post-norm residual: LayerNorm(dense(h) + residual), BERT's `*.output` blocks."""

    def __init__(self, in_width, hidden, eps, dtype, device, operations):
        super().__init__()
        self.dense = operations.Linear(in_width, hidden, dtype=dtype, device=device)
        self.LayerNorm = operations.LayerNorm(hidden, eps=eps, dtype=dtype, device=device)

    def forward(self, h, residual):
        return self.LayerNorm(self.dense(h) + residual)


class Attention(torch.nn.Module):
    def __init__(self, config, kv_width, dtype, device, operations):
        super().__init__()
        self.self = SelfOrCrossAttention(config.hidden_size, kv_width, config.num_heads, dtype, device, operations)
        self.output = ResidualOutput(config.hidden_size, config.hidden_size, config.layer_norm_eps, dtype, device, operations)

    def forward(self, x, context):
        return self.output(self.self(x, context), x)


class Intermediate(torch.nn.Module):
    def __init__(self, config, dtype, device, operations):
        super().__init__()
        self.dense = operations.Linear(config.hidden_size, config.intermediate_size, dtype=dtype, device=device)

    def forward(self, x):
        return F.gelu(self.dense(x))  # exact (erf) GELU, as BERT


class QFormerLayer(torch.nn.Module):
    def __init__(self, config, dtype, device, operations):
        super().__init__()
        eps, args = config.layer_norm_eps, (dtype, device, operations)
        self.attention = Attention(config, config.hidden_size, *args)
        self.crossattention = Attention(config, config.vision_width, *args)
        self.intermediate = Intermediate(config, *args)
        self.output = ResidualOutput(config.intermediate_size, config.hidden_size, eps, *args)
        self.intermediate_query = Intermediate(config, *args)
        self.output_query = ResidualOutput(config.intermediate_size, config.hidden_size, eps, *args)

    def forward(self, x, image, num_queries):
        x = self.attention(x, x)  # bidirectional over queries and text
        queries, text = x[:, :num_queries], x[:, num_queries:]
        queries = self.crossattention(queries, image)
        queries = self.output_query(self.intermediate_query(queries), queries)
        text = self.output(self.intermediate(text), text)
        return torch.cat([queries, text], dim=1)


class QFormerEmbeddings(torch.nn.Module):
    def __init__(self, config, dtype, device, operations):
        super().__init__()
        self.word_embeddings = operations.Embedding(config.vocab_size, config.hidden_size, dtype=dtype, device=device)
        self.position_embeddings = operations.Embedding(config.max_positions, config.hidden_size, dtype=dtype, device=device)
        self.LayerNorm = operations.LayerNorm(config.hidden_size, eps=config.layer_norm_eps, dtype=dtype, device=device)
        # Part of the official state dict; always arange(max_positions).
        self.register_buffer("position_ids", torch.arange(config.max_positions, device=device).unsqueeze(0))

    def forward(self, input_ids, query_embeds):
        positions = self.position_ids[:, : input_ids.shape[1]]
        text = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        return self.LayerNorm(torch.cat([query_embeds, text.to(query_embeds.dtype)], dim=1))


class QFormerEncoder(torch.nn.Module):
    def __init__(self, config, dtype, device, operations):
        super().__init__()
        self.layer = torch.nn.ModuleList(QFormerLayer(config, dtype, device, operations) for _ in range(config.num_layers))


class QFormer(torch.nn.Module):
    """`Qformer.bert` of LAVIS: returns the last hidden state of [queries ; text]."""

    def __init__(self, config, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        self.config = config
        self.embeddings = QFormerEmbeddings(config, dtype, device, operations)
        self.encoder = QFormerEncoder(config, dtype, device, operations)

    def forward(self, input_ids, query_embeds, image_embeds):
        x = self.embeddings(input_ids, query_embeds)
        image_embeds = image_embeds.to(x.dtype)
        for layer in self.encoder.layer:
            x = layer(x, image_embeds, query_embeds.shape[1])
        return x
