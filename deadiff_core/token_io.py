"""Reference tokens on disk: a safetensors file per ReferenceTokens, tagged so that a file from
elsewhere is recognised as such."""
import json

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .layers import BRANCHES
from .tokens import ReferenceTokens

FORMAT = "deadiff-tokens"
VERSION = "1"


def save_tokens(path, tokens, extra_metadata=None):
    tensors = {branch: tokens[branch].detach().to("cpu", torch.float32).contiguous() for branch in tokens.branches}
    metadata = {"format": FORMAT, "version": VERSION, "branches": ",".join(tokens.branches),
                "num_references": str(tokens.num_references), **(extra_metadata or {})}
    save_file(tensors, str(path), metadata=metadata)


def load_tokens(path):
    """ReferenceTokens from a file written by save_tokens; ValueError naming the file otherwise."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable safetensors file ({e}); save tokens with DEADiff Save Tokens") from None
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path}: not a DEADiff tokens file (no format={FORMAT} in its metadata; it holds "
                         f"{', '.join(sorted(tensors)[:4]) or 'nothing'}). Save tokens with DEADiff Save Tokens.")
    if metadata.get("version") != VERSION:
        raise ValueError(f"{path}: DEADiff tokens format version {metadata.get('version')!r}; this pack reads version {VERSION}")
    unknown = set(tensors) - set(BRANCHES)
    if unknown:
        raise ValueError(f"{path}: unexpected tensors {sorted(unknown)} in a DEADiff tokens file")
    try:
        return ReferenceTokens(**{branch: tensors.get(branch) for branch in BRANCHES})
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
