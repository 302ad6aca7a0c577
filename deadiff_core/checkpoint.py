"""Reading DEADiff weights: the official `deadiff_v1.ckpt` and converted adapter `.safetensors`.

Both go through one path: open the file lazily (mmap), find the branches it holds, infer the
configuration from tensor shapes, check every expected key and shape, then materialise only the
adapter's tensors, giving back each one's file pages once copied (file_pages.py). Small random
test files and the real 7.43 GB file take the same code.
"""
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from safetensors import SafetensorError, safe_open

from . import ops
from .encoder import DEADiffEncoder
from .file_pages import FilePages
from .layers import BRANCHES, SD15_LAYERS, layers_of
from .pickle_globals import unsafe_globals
from .projections import ImageProjections
from .qformer import QFormerConfig
from .token_io import FORMAT as TOKENS_FORMAT

ADAPTER_FORMAT = "deadiff-adapter"
ADAPTER_FORMAT_VERSION = "1"
VISION_PREFIX = "visual_encoder."


class CheckpointError(ValueError):
    """A file that cannot be used as DEADiff weights; the message names the file and what to do."""

    def __init__(self, path, problem):
        super().__init__(f"{os.fspath(path)}: {problem}")


class VisionTowersDiffer(CheckpointError):
    """The two embedded ViT copies are not equal, so neither can be trusted as DEADiff's."""


class TokensNotWeights(CheckpointError):
    """A tokens file (token_io.py) given where model weights belong."""


class IPAdapterFile(CheckpointError):
    """An IP-Adapter file given where DEADiff weights belong."""


class DiffusionCheckpoint(CheckpointError):
    """A diffusion-model checkpoint (e.g. Stable Diffusion itself) given where DEADiff weights belong."""


@dataclass(frozen=True)
class AdapterInfo:
    source_format: str          # "official checkpoint" or "adapter safetensors"
    branches: tuple
    has_vision: bool
    stored_dtypes: tuple        # dtypes of the adapter tensors in the file
    qformer: QFormerConfig

    def describe(self):
        branches = " + ".join(self.branches)
        missing = [b for b in BRANCHES if b not in self.branches]
        note = f" (no {', '.join(missing)} branch)" if missing else ""
        vision = "with its own CLIP vision tower" if self.has_vision else "no vision tower"
        dtypes = "/".join(str(d).removeprefix("torch.") for d in self.stored_dtypes)
        return f"{self.source_format}, branches: {branches}{note}, {vision}, stored {dtypes}"


@dataclass
class DEADiffAdapter:
    encoder: DEADiffEncoder
    projections: ImageProjections
    vision_state_dict: dict     # OpenAI-CLIP-layout ViT weights (visual_encoder.* stripped), or None
    info: AdapterInfo


# ---------------------------------------------------------------- reading a file lazily

class _SafetensorsDict(Mapping):
    """The tensors of a safetensors file, read on access."""

    def __init__(self, handle):
        self._handle = handle
        self._keys = tuple(handle.keys())

    def __getitem__(self, key):
        if key not in self._keys:
            raise KeyError(key)
        return self._handle.get_tensor(key)

    def __iter__(self):
        return iter(self._keys)

    def __len__(self):
        return len(self._keys)


def _read_safetensors(path):
    try:
        handle = safe_open(path, framework="pt", device="cpu")
    except SafetensorError as e:
        raise CheckpointError(path, f"not a readable safetensors file ({e}); the file is corrupt or truncated — download or convert it again.") from None
    return _SafetensorsDict(handle), handle.metadata() or {}


_UNREADABLE = ("cannot be read as a PyTorch checkpoint: the file is truncated, corrupt or of another kind. "
               "Download it again (deadiff_v1.ckpt is 7.43 GB) or convert it again.")
_UNREADABLE_ERRORS = (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError)


def _refused(names):
    return (f"refused: the file's pickle calls {', '.join(names)}, which could run code. It was NOT loaded, and "
            "that code was not run. A weights file holds only tensors: only use model files from sources you "
            "trust (the official deadiff_v1.ckpt and converted .safetensors load safely).")


def _read_pickle(path):
    # weights_only refuses any pickle that carries code; mmap keeps the 7.43 GB file out of RAM.
    mmap = zipfile.is_zipfile(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:
        # whatever torch raised: a file whose pickle calls code is named as such, never as a broken download
        unsafe = unsafe_globals(path)
        if unsafe:
            raise CheckpointError(path, _refused(unsafe)) from None
        if isinstance(e, pickle.UnpicklingError):
            raise CheckpointError(path, _UNREADABLE) from None
        if isinstance(e, _UNREADABLE_ERRORS):
            raise CheckpointError(path, f"{_UNREADABLE} ({type(e).__name__}: {str(e).strip().splitlines()[0][:160]})") from None
        raise
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(path, f"holds a {type(obj).__name__}, not a state dict of tensors; this is not a DEADiff checkpoint.")
    return obj, {}


def read_state_dict(path):
    """Open a checkpoint lazily: returns (key -> tensor mapping, safetensors metadata or {})."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise CheckpointError(path, "is a directory; select the checkpoint file inside it (e.g. deadiff_v1.ckpt).")
    if not os.path.isfile(path):
        raise CheckpointError(path, "does not exist.")
    if os.path.getsize(path) == 0:
        raise CheckpointError(path, "is empty (0 bytes); the download or copy did not finish — get the file again.")
    if path.lower().endswith(".safetensors"):
        return _read_safetensors(path)
    return _read_pickle(path)


# ---------------------------------------------------------------- what the file holds

def official_module_keys(branch):
    """Official checkpoint prefix -> DEADiffEncoder state-dict prefix, for one branch."""
    return {
        f"{branch}_blip.ln_vision.": f"branches.{branch}.ln_vision.",
        f"{branch}_blip.query_tokens": f"branches.{branch}.query_tokens",
        f"{branch}_blip.Qformer.bert.": f"branches.{branch}.qformer.",
        f"{branch}_proj_layer.": f"branches.{branch}.proj.",
    }


def _rename(key, mapping):
    for old, new in mapping.items():
        if key.startswith(old):
            return new + key[len(old):]
    return None


def _foreign_file(path, keys):
    """The error for a file without DEADiff weights: what it is instead, where that can be told."""
    keys = list(keys)
    if any(k.startswith(("image_proj", "ip_adapter")) for k in keys):
        return IPAdapterFile(path, "is an IP-Adapter file, not DEADiff; DEADiff's weights are deadiff_v1.ckpt or an "
                                   "adapter converted from it.")
    if any(k.startswith(("model.diffusion_model.", "input_blocks.", "double_blocks.", "first_stage_model.")) for k in keys):
        return DiffusionCheckpoint(path, "is a diffusion-model checkpoint (e.g. plain Stable Diffusion), not DEADiff: it "
                                         "has no style_blip / content_blip weights.")
    sample = ", ".join(keys[:3]) or "no keys at all"
    return CheckpointError(path, f"holds no DEADiff weights (expected keys starting with style_blip. or content_blip.; "
                                 f"found {sample}). Use deadiff_v1.ckpt or an adapter converted from it with "
                                 "`python -m deadiff_core.convert`.")


def _branches_in(keys):
    return tuple(b for b in BRANCHES if any(k.startswith((f"{b}_blip.", f"{b}_proj_layer.")) for k in keys))


def _require(sd, path, key, what):
    if key not in sd:
        raise CheckpointError(path, f"the {what} is incomplete: key '{key}' is missing; the file is damaged or not a DEADiff checkpoint.")
    if not isinstance(sd[key], torch.Tensor):
        raise CheckpointError(path, f"'{key}' holds a {type(sd[key]).__name__}, not a tensor; this is not a DEADiff checkpoint.")
    return sd[key]


def infer_qformer_config(sd, path, branch):
    """Configuration from tensor shapes, so any size of Q-Former goes through the same code."""
    blip, what = f"{branch}_blip.", f"{branch} branch"
    queries = _require(sd, path, blip + "query_tokens", what)
    bert = blip + "Qformer.bert."
    layer_ids = {int(m.group(1)) for k in sd.keys() if (m := re.match(re.escape(bert) + r"encoder\.layer\.(\d+)\.", k))}
    if not layer_ids or queries.ndim != 3:
        raise CheckpointError(path, f"the {what} has no usable Q-Former layers; the file is damaged or not a DEADiff checkpoint.")
    return QFormerConfig(
        hidden_size=queries.shape[2],
        num_layers=max(layer_ids) + 1,
        intermediate_size=_require(sd, path, bert + "encoder.layer.0.intermediate.dense.weight", what).shape[0],
        vision_width=_require(sd, path, blip + "ln_vision.weight", what).shape[0],
        vocab_size=_require(sd, path, bert + "embeddings.word_embeddings.weight", what).shape[0],
        max_positions=_require(sd, path, bert + "embeddings.position_embeddings.weight", what).shape[0],
        num_query_tokens=queries.shape[1],
    )


@dataclass
class AdapterLayout:
    """Which official keys make the adapter, and the modules (on `meta`) they fill."""
    branches: tuple
    qformer: QFormerConfig
    proj_hidden: int
    encoder_keys: dict          # official key -> encoder state-dict key
    projection_keys: dict       # official key -> projections state-dict key
    channels: dict              # layer index -> channels
    vision_keys: tuple          # official keys of the ViT copy kept (empty if none)

    def build(self, dtype=None, device=None, operations=ops):
        encoder = DEADiffEncoder(self.qformer, self.proj_hidden, self.branches, dtype, device, operations)
        projections = ImageProjections(self.channels, self.qformer.hidden_size, dtype, device, operations)
        return encoder, projections

    def official_keys(self):
        return (*self.encoder_keys, *self.projection_keys, *self.vision_keys)


def _vision_copies(sd, branches):
    return {b: sorted(k for k in sd.keys() if k.startswith(f"{b}_blip.{VISION_PREFIX}")) for b in branches}


def _check_vision_copies_equal(sd, path, copies):
    """DEADiff froze the ViT, so both branch copies must be identical before one is kept."""
    (first, first_keys), *others = [(b, keys) for b, keys in copies.items() if keys]
    pages = FilePages()
    for branch, keys in others:
        strip = lambda ks, b: [k.removeprefix(f"{b}_blip.") for k in ks]  # noqa: E731
        if strip(keys, branch) != strip(first_keys, first):
            raise CheckpointError(path, f"the {first} and {branch} vision towers have different keys; cannot keep a single copy.")
        for a, b in zip(first_keys, keys):
            if not torch.equal(sd[a], sd[b]):
                raise VisionTowersDiffer(path, f"the {first} and {branch} vision towers differ ({a} vs {b}); DEADiff's "
                                         "ViT is frozen, so this file was modified.")
            pages.release(sd[a])
            pages.release(sd[b])


def adapter_layout(sd, path, with_vision=True, branches=None):
    """Find and check everything the adapter needs in an opened state dict (`branches`: only these)."""
    found = _branches_in(sd.keys())
    if not found:
        raise _foreign_file(path, sd.keys())
    missing = [b for b in branches or () if b not in found]
    if missing:
        raise CheckpointError(path, f"has no {' or '.join(missing)} branch (it holds {' + '.join(found)}); "
                              "load the branches it has")
    branches = tuple(b for b in found if branches is None or b in branches)
    config = infer_qformer_config(sd, path, branches[0])
    proj_hidden = _require(sd, path, f"{branches[0]}_proj_layer.dense1.weight", f"{branches[0]} projection layer").shape[0]

    layer_indices = sorted(layer.index for b in branches for layer in layers_of(b))
    channels = {}
    for index in layer_indices:
        key_k, _ = SD15_LAYERS[index].image_projection_keys
        channels[index] = _require(sd, path, key_k, f"image projection of layer {index} ({SD15_LAYERS[index].ldm_block})").shape[0]

    layout = AdapterLayout(branches, config, proj_hidden, {}, {}, channels, ())
    encoder, projections = layout.build(device="meta")
    mapping = {}
    for branch in branches:
        mapping.update(official_module_keys(branch))
    reverse = {new: old for old, new in mapping.items()}
    layout.encoder_keys = {_rename(k, reverse): k for k in encoder.state_dict()}
    for index in layer_indices:
        for official, name in zip(SD15_LAYERS[index].image_projection_keys, ("i_to_k", "i_to_v")):
            layout.projection_keys[official] = f"layers.{index}.{name}.weight"

    expected = {**{o: encoder.state_dict()[m] for o, m in layout.encoder_keys.items()},
                **{o: projections.state_dict()[m] for o, m in layout.projection_keys.items()}}
    for official, target in expected.items():
        got = _require(sd, path, official, "DEADiff adapter")
        if tuple(got.shape) != tuple(target.shape):
            raise CheckpointError(path, f"'{official}' has shape {list(got.shape)} but {list(target.shape)} was expected "
                                  "from the rest of the file; the file is damaged or mixes different models.")

    copies = _vision_copies(sd, branches)
    if with_vision and any(copies.values()):
        _check_vision_copies_equal(sd, path, copies)
        layout.vision_keys = tuple(next(keys for keys in copies.values() if keys))
    return layout


def _stored_dtypes(sd, keys):
    return tuple(sorted({sd[k].dtype for k in keys if sd[k].is_floating_point()}, key=str))


def _tensors_in(keys, sd, dtype, device, pages):
    """{new name: tensor} for {official key: new name}, copied out of the file onto `device` with floating-point
    tensors in `dtype` (keys and shapes were checked by adapter_layout). One tensor at a time: of an mmap-ed file
    only these tensors' pages are read, and each one's pages are given back once copied, so the copy is all
    that stays."""
    tensors = {}
    for official, name in keys.items():
        source = sd[official]
        tensors[name] = source.to(device=device, dtype=dtype if source.is_floating_point() else None, copy=True)
        pages.release(source)
    return tensors


def _vision_names(keys):
    """Official keys of the kept ViT copy -> OpenAI-CLIP names (visual_encoder.* stripped)."""
    prefix = keys[0].split(VISION_PREFIX)[0] + VISION_PREFIX
    return {key: key.removeprefix(prefix) for key in keys}


def load_adapter(path, dtype=torch.float32, device="cpu", operations=ops, with_vision=True, branches=None):
    """Load DEADiff's encoder, image projections and (optionally) its embedded ViT from a file;
    `branches` (e.g. ("style",)) loads only those branches' Q-Former and layer projections."""
    path = os.fspath(path)
    sd, metadata = read_state_dict(path)
    return adapter_from_state_dict(sd, path, source_format(path, metadata), dtype, device, operations, with_vision,
                                   branches)


def source_format(path, metadata):
    """What a file is by its safetensors metadata: an adapter convert.py wrote (of a format version this code
    reads), official weights (a pickle, or a safetensors file another tool wrote: its keys then decide), or
    something DEADiff-made that holds no weights."""
    kind, version = metadata.get("format"), metadata.get("version")
    if kind == TOKENS_FORMAT:
        raise TokensNotWeights(path, "is a DEADiff tokens file (saved reference tokens), not model weights.")
    if kind != ADAPTER_FORMAT:
        return "official weights (safetensors)" if path.lower().endswith(".safetensors") else "official checkpoint"
    if version == ADAPTER_FORMAT_VERSION:
        return "adapter safetensors"
    if version is not None and version.isdigit() and int(version) > int(ADAPTER_FORMAT_VERSION):
        raise CheckpointError(path, f"is a DEADiff adapter of format version {version}, written by a newer "
                              f"ComfyUI-DEADiff; this one reads version {ADAPTER_FORMAT_VERSION}. Update the pack.")
    raise CheckpointError(path, f"names itself a DEADiff adapter but its format version is {version!r}, which no "
                          "ComfyUI-DEADiff writes; the file was edited or damaged. Convert it again.")


def adapter_from_state_dict(sd, path, source_format, dtype=torch.float32, device="cpu", operations=ops, with_vision=True,
                            branches=None):
    """The adapter from an opened official-layout state dict (`path` names it in errors)."""
    layout = adapter_layout(sd, path, with_vision, branches)
    # Built on `meta`, then given the file's tensors (assign): the way ComfyUI loads its own models under
    # DynamicVRAM, where comfy.ops layers hold no weight until their state dict arrives.
    encoder, projections = layout.build(dtype, "meta", operations)
    pages = FilePages()
    encoder.load_state_dict(_tensors_in(layout.encoder_keys, sd, dtype, device, pages), assign=True)
    projections.load_state_dict(_tensors_in(layout.projection_keys, sd, dtype, device, pages), assign=True)
    vision = _tensors_in(_vision_names(layout.vision_keys), sd, dtype, device, pages) if layout.vision_keys else None
    info = AdapterInfo(
        source_format=source_format,
        branches=layout.branches,
        has_vision=vision is not None,
        stored_dtypes=_stored_dtypes(sd, (*layout.encoder_keys, *layout.projection_keys)),
        qformer=layout.qformer,
    )
    return DEADiffAdapter(encoder.eval().requires_grad_(False), projections.eval().requires_grad_(False), vision, info)
