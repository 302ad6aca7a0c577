"""DEADiff's dual encoder: per branch ln_vision -> Q-Former -> ProjLayer (docs/DESIGN.md, Encoder).

Input is the CLIP ViT-L/14 penultimate hidden state [B, 257, 1024] (ComfyUI's
`penultimate_hidden_states`); output is 16 tokens x 768 per branch.
"""
import torch
import torch.nn.functional as F

from .layers import BRANCHES, CONTENT, STYLE
from .qformer import QFormer

# bert-base-uncased ids of "[CLS] style [SEP]" and "[CLS] content [SEP]": no tokenizer needed.
BRANCH_TOKEN_IDS = {STYLE: (101, 2806, 102), CONTENT: (101, 4180, 102)}


class ProjLayer(torch.nn.Module):
    """BLIP-Diffusion's ProjLayer: y = x + dense2(QuickGELU(dense1(LayerNorm(x))))."""

    def __init__(self, width, hidden, dtype=None, device=None, operations=torch.nn, dropout=0.1):
        super().__init__()
        self.LayerNorm = operations.LayerNorm(width, eps=1e-12, dtype=dtype, device=device)
        self.dense1 = operations.Linear(width, hidden, dtype=dtype, device=device)
        self.dense2 = operations.Linear(hidden, width, dtype=dtype, device=device)
        self.dropout = dropout

    def forward(self, x):
        h = self.dense1(self.LayerNorm(x))
        h = self.dense2(h * torch.sigmoid(1.702 * h))
        return x + F.dropout(h, self.dropout, self.training)


class BranchEncoder(torch.nn.Module):
    """One DEADiff branch: a Q-Former told the word `branch`, reading the image tokens."""

    def __init__(self, branch, qformer_config, proj_hidden, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        config = qformer_config
        self.branch = branch
        self.ln_vision = operations.LayerNorm(config.vision_width, eps=1e-5, dtype=dtype, device=device)
        self.query_tokens = torch.nn.Parameter(
            torch.empty(1, config.num_query_tokens, config.hidden_size, dtype=dtype, device=device))
        self.qformer = QFormer(config, dtype, device, operations)
        self.proj = ProjLayer(config.hidden_size, proj_hidden, dtype, device, operations)
        self.token_ids = BRANCH_TOKEN_IDS[branch]

    def forward(self, vision_hidden_states):
        batch = vision_hidden_states.shape[0]
        image = self.ln_vision(vision_hidden_states)
        queries = self.query_tokens.to(dtype=image.dtype, device=image.device).expand(batch, -1, -1)
        input_ids = torch.tensor([self.token_ids], device=image.device).expand(batch, -1)
        hidden = self.qformer(input_ids, queries, image)
        return self.proj(hidden[:, : queries.shape[1]])


class DEADiffEncoder(torch.nn.Module):
    """Both branches (or the ones a checkpoint holds); returns {branch: [B, 16, 768]}."""

    def __init__(self, qformer_config, proj_hidden, branches=BRANCHES, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        self.config = qformer_config
        self.branches = torch.nn.ModuleDict({
            name: BranchEncoder(name, qformer_config, proj_hidden, dtype, device, operations) for name in branches
        })

    def forward(self, vision_hidden_states, branches=None):
        names = branches or tuple(self.branches)
        return {name: self.branches[name](vision_hidden_states) for name in names}


def mix_tokens(tokens, ratios):
    """Official style mixing: the ratio-weighted sum of projected tokens.

    tokens: [N, T, C] (one row per reference); ratios: N non-negative numbers, normalised to sum 1.
    Returns [1, T, C].
    """
    ratios = torch.as_tensor(ratios, dtype=torch.float64)
    if ratios.ndim != 1 or ratios.numel() != tokens.shape[0]:
        raise ValueError(f"mixing needs one ratio per reference: got {ratios.numel()} ratios for {tokens.shape[0]} references")
    if not torch.isfinite(ratios).all() or (ratios < 0).any() or ratios.sum() <= 0:
        raise ValueError(f"mixing ratios must be finite, non-negative and not all zero, got {ratios.tolist()}")
    weights = (ratios / ratios.sum()).to(tokens.dtype).to(tokens.device)
    return torch.einsum("n,ntc->tc", weights, tokens).unsqueeze(0)
