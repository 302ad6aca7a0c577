"""BLIP-Diffusion's published weights as a DEADiff starting point (docs/DESIGN.md, Training: both Q-Formers and
ProjLayers start from them).

LAVIS's BlipDiffusion holds `blip` (a Blip2Qformer: visual_encoder, ln_vision, query_tokens,
Qformer.bert, ...) and `proj_layer` (the same ProjLayer as DEADiff's). Two published layouts:
- the checkpoint folder LAVIS loads (`load_checkpoint_from_dir`): blip_model/blip_weight.pt and
  proj_layer/proj_weight.pt, each the module's own state dict;
- one file with the whole model's state dict (`blip.*`, `proj_layer.*`, `unet.*`, ...), optionally
  under "model" or "state_dict".
DEADiff copied BLIP-Diffusion's modules once per branch, so the translation is a prefix change:
`blip.` -> `style_blip.` and `content_blip.`, `proj_layer.` -> `style_proj_layer.` and
`content_proj_layer.`.
"""
import os

import torch

from ..checkpoint import CheckpointError, read_state_dict
from ..layers import BRANCHES
from ..synthetic import TINY, _Random, blip, proj_layer, vision_encoder

FOLDER_FILES = {"blip.": os.path.join("blip_model", "blip_weight.pt"), "proj_layer.": os.path.join("proj_layer", "proj_weight.pt")}


def _read(path):
    sd, _ = read_state_dict(path)
    return sd["model"] if isinstance(sd.get("model"), dict) else sd


def read_blip_diffusion(path):
    """{"blip.<key>": tensor, "proj_layer.<key>": tensor} from either published layout."""
    path = os.fspath(path)
    if os.path.isdir(path):
        missing = [name for name in FOLDER_FILES.values() if not os.path.isfile(os.path.join(path, name))]
        if missing:
            raise CheckpointError(path, f"is a folder without {', '.join(missing)}: not a BLIP-Diffusion checkpoint folder")
        sd = {}
        for prefix, name in FOLDER_FILES.items():
            sd.update({prefix + k: v for k, v in _read(os.path.join(path, name)).items()})
        return sd
    if not os.path.exists(path):
        raise CheckpointError(path, "does not exist.")
    sd = _read(path)
    kept = {k: v for k, v in sd.items() if k.startswith(tuple(FOLDER_FILES))}
    if not any(k.startswith("blip.Qformer.bert.") for k in kept) or not any(k.startswith("proj_layer.") for k in kept):
        sample = ", ".join(list(sd)[:3]) or "no keys"
        raise CheckpointError(path, f"holds no BLIP-Diffusion Q-Former and ProjLayer (expected blip.Qformer.bert.* and "
                              f"proj_layer.* keys; found {sample}). Give the BLIP-Diffusion checkpoint folder or model file.")
    return kept


def as_deadiff_layout(blip_diffusion):
    """The same tensors under both DEADiff branches' official key names."""
    sd = {}
    for branch in BRANCHES:
        for key, tensor in blip_diffusion.items():
            prefix = f"{branch}_blip." if key.startswith("blip.") else f"{branch}_proj_layer."
            sd[prefix + key.split(".", 1)[1]] = tensor
    return sd


def write_synthetic_blip_diffusion(path, layout=TINY, seed=0, folder=True):
    """Random weights in BLIP-Diffusion's published layout, built from the key list in docs/DESIGN.md, Checkpoint (for
    tests and dry runs): the checkpoint folder, or (folder=False) one whole-model file."""
    rnd = _Random(seed, 0.02, "cpu")
    blip_sd = blip(layout, rnd, vision_encoder(layout, rnd))
    proj_sd = proj_layer(layout, rnd)
    if folder:
        for module_sd, name in ((blip_sd, FOLDER_FILES["blip."]), (proj_sd, FOLDER_FILES["proj_layer."])):
            os.makedirs(os.path.join(path, os.path.dirname(name)), exist_ok=True)
            torch.save(module_sd, os.path.join(path, name))
    else:
        whole = {**{f"blip.{k}": v for k, v in blip_sd.items()}, **{f"proj_layer.{k}": v for k, v in proj_sd.items()},
                 "unet.conv_in.weight": rnd(8, 4, 3, 3), "ctx_embeddings_cache": rnd(1, layout.queries, layout.hidden)}
        torch.save({"model": whole}, path)
    return blip_sd, proj_sd
