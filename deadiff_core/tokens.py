"""Reference tokens: what DEADiff Encode produces and DEADiff Apply consumes.

Per branch a [N, T, D] tensor: N references, T tokens each (16 from the Q-Former), width D (768).
"""
from dataclasses import dataclass

import torch

from .layers import BRANCHES
from .token_bounds import check_counts

COMBINE_METHODS = ("average", "concat", "per latent")


@dataclass(frozen=True)
class ReferenceTokens:
    style: torch.Tensor = None
    content: torch.Tensor = None

    def __post_init__(self):
        present = [t for t in (self.style, self.content) if t is not None]
        if not present:
            raise ValueError("reference tokens need at least one branch (style or content)")
        for t in present:
            if t.ndim != 3 or t.shape[0] == 0 or not t.is_floating_point():
                raise ValueError(f"reference tokens must be float [N, T, D] tensors with N >= 1, got {tuple(t.shape)} {t.dtype}")
            check_counts(t.shape[0], t.shape[1])
            if not torch.isfinite(t).all():
                raise ValueError("reference tokens contain NaN or infinite values")
        if len(present) == 2 and self.style.shape != self.content.shape:
            raise ValueError(f"style and content tokens differ in shape: {tuple(self.style.shape)} vs {tuple(self.content.shape)}")

    @property
    def branches(self):
        return tuple(b for b in BRANCHES if self[b] is not None)

    @property
    def num_references(self):
        return self[self.branches[0]].shape[0]

    def __getitem__(self, branch):
        return getattr(self, branch)

    def combined(self, branch, method="average"):
        """A branch's tokens as a layer reads them: one set [T', D] for every latent (the mean of the references,
        or all of them in a row), or per latent [N, T, D] (reference i for latent i)."""
        tokens = self[branch]
        if method == "average":
            return tokens.mean(dim=0)
        if method == "concat":
            return tokens.flatten(0, 1)
        if method == "per latent":
            return tokens
        raise ValueError(f"unknown combine method {method!r}; use one of {COMBINE_METHODS}")
