"""The trained weights as an adapter .safetensors that DEADiffLoader loads unchanged.

The modules are written under the official checkpoint's key names, then handed to the converter
(deadiff_core.convert), which checks the layout like any official file and writes the adapter
with its metadata and dtype: one writer for converted and trained adapters.
"""
import os
import tempfile

from safetensors.torch import save_file

from ..checkpoint import VISION_PREFIX, official_module_keys
from ..convert import convert
from ..layers import BRANCHES, SD15_LAYERS


def official_state_dict(encoder_state, projection_state, vision_state_dict=None):
    """DEADiffEncoder and ImageProjections state dicts -> {official key: tensor} (the layout of
    deadiff_v1.ckpt's state_dict)."""
    module_to_official = {}
    for branch in BRANCHES:
        module_to_official.update({new: old for old, new in official_module_keys(branch).items()})
    sd = {}
    for key, tensor in encoder_state.items():
        prefix = next(p for p in module_to_official if key.startswith(p))
        sd[module_to_official[prefix] + key[len(prefix):]] = tensor
    for layer in SD15_LAYERS:
        names = (f"layers.{layer.index}.i_to_k.weight", f"layers.{layer.index}.i_to_v.weight")
        sd.update({official: projection_state[name] for official, name in zip(layer.image_projection_keys, names)})
    for key, tensor in (vision_state_dict or {}).items():
        sd[f"{BRANCHES[0]}_blip.{VISION_PREFIX}{key}"] = tensor  # one copy; the converter keeps it
    return sd


def export_adapter(path, encoder_state, projection_state, vision_state_dict=None, dtype="fp16", source_name="deadiff-trained"):
    """Write the adapter to `path` (replacing it); returns the converter's metadata."""
    official = official_state_dict(encoder_state, projection_state, vision_state_dict)
    sd = {k: v.detach().to("cpu").contiguous().clone() for k, v in official.items()}
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".export-") as scratch:
        unconverted = os.path.join(scratch, f"{source_name}.safetensors")  # the name lands in the metadata's "source"
        save_file(sd, unconverted)
        return convert(unconverted, path, with_vision=vision_state_dict is not None, dtype=dtype, force=True, progress=False)
