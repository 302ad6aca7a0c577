"""Reference tokens on disk: a safetensors file per ReferenceTokens, tagged so that a file from
elsewhere is recognised as such."""
import json
import os

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .layers import BRANCHES
from .token_bounds import check_counts
from .tokens import ReferenceTokens

FORMAT = "deadiff-tokens"
VERSION = "1"


def save_tokens(path, tokens, extra_metadata=None):
    tensors = {branch: tokens[branch].detach().to("cpu", torch.float32).contiguous() for branch in tokens.branches}
    metadata = {"format": FORMAT, "version": VERSION, "branches": ",".join(tokens.branches),
                "num_references": str(tokens.num_references), **(extra_metadata or {})}
    save_file(tensors, str(path), metadata=metadata)


def _check_size(path, free_memory):
    size = os.path.getsize(path)  # load_file reads the whole file
    if free_memory is not None and size > free_memory:
        raise ValueError(f"{path}: its {size / 2**30:.1f} GiB would not fit in the {free_memory / 2**30:.1f} GiB "
                         "of memory free")


def _check_shapes(path, shapes):
    """Refuse, from the header alone, what the pack cannot use."""
    for name, shape in shapes.items():
        if len(shape) != 3:
            raise ValueError(f"{path}: {name} tokens are {list(shape)}; DEADiff tokens are [references, tokens, width]")
        try:
            check_counts(shape[0], shape[1])
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None


def _unreadable(path, error):
    return ValueError(f"{path}: not a readable safetensors file ({error}); save tokens with DEADiff Save Tokens")


def load_tokens(path, free_memory=None):
    """ReferenceTokens from a file written by save_tokens; ValueError naming the file otherwise. The header is
    checked before any tensor is read: the size against `free_memory` bytes if given, then shapes and counts."""
    _check_size(path, free_memory)
    try:
        with safe_open(str(path), framework="pt") as f:  # maps the file, reads only its header
            metadata = f.metadata() or {}
            shapes = {name: f.get_slice(name).get_shape() for name in f.keys()}
    except (SafetensorError, OSError, RuntimeError, json.JSONDecodeError) as e:
        raise _unreadable(path, e) from None
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path}: not a DEADiff tokens file (no format={FORMAT} in its metadata; it holds "
                         f"{', '.join(sorted(shapes)[:4]) or 'nothing'}). Save tokens with DEADiff Save Tokens.")
    if metadata.get("version") != VERSION:
        raise ValueError(f"{path}: DEADiff tokens format version {metadata.get('version')!r}; this pack reads version {VERSION}")
    unknown = set(shapes) - set(BRANCHES)
    if unknown:
        raise ValueError(f"{path}: unexpected tensors {sorted(unknown)} in a DEADiff tokens file")
    _check_shapes(path, shapes)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise _unreadable(path, e) from None
    try:
        return ReferenceTokens(**{branch: tensors.get(branch) for branch in BRANCHES})
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
