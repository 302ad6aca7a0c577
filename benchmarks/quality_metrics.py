"""The quality harness's metrics, from local weights only (nothing is downloaded):

- text alignment: CLIP text-image cosine, the paper's TA (`--clip`: a transformers CLIP folder such as a copy
  of openai/clip-vit-large-patch14: config.json, weights, tokenizer and preprocessor files);
- style similarity (CLIP): cosine of the CLIP image embeddings of the image and its reference;
- style similarity (CSD): the same with CSD's style descriptor (`--csd`: the CSD ViT-L checkpoint, e.g.
  tomg-group-umd/CSD-ViT-L's pytorch_model.bin, or its state dict as .safetensors);
- aesthetic: the LAION improved aesthetic predictor, the paper's image quality (`--aesthetic`:
  sac+logos+ava1-l14-linearMSE.pth), on the `--clip` model's image embeddings (it expects CLIP ViT-L/14's).
"""
import argparse
import math
import os

import torch

from deadiff_core.clip_embeddings import ClipEmbeddings, read_rgb, unit
from deadiff_core.comfy_runtime import import_comfy

COLUMNS = {"text_alignment": "text alignment (CLIP)", "style_clip": "style similarity (CLIP)",
           "style_csd": "style similarity (CSD)", "aesthetic": "aesthetic"}
BATCH = 16


def check_files(clip, csd=None, aesthetic=None):
    """Fail before any generation when a metric's weights are not where the flags say."""
    if not os.path.isfile(os.path.join(clip, "config.json")):
        raise SystemExit(f"--clip {clip}: not a transformers CLIP folder (no config.json). Give a local copy of "
                         f"e.g. openai/clip-vit-large-patch14 (config, weights, tokenizer and preprocessor files); "
                         f"the harness downloads nothing.")
    for flag, path in (("--csd", csd), ("--aesthetic", aesthetic)):
        if path and not os.path.isfile(path):
            raise SystemExit(f"{flag} {path}: no such file")


def read_weights(path, flag):
    """A state dict from .safetensors or a PyTorch pickle (tensors and plain containers only)."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):  # CSD's checkpoint keeps its training args
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SystemExit(f"{flag} {path}: not readable as PyTorch weights ({type(e).__name__}: {e})") from None


def load_clip(folder):
    """--clip's ClipEmbeddings; a folder they cannot be read from stops the harness, saying why."""
    try:
        return ClipEmbeddings(folder)
    except (OSError, ValueError) as e:
        raise SystemExit(f"--clip {folder}: cannot load it as a CLIP model with its processor ({e})") from None


class CSD:
    """CSD's style descriptor: an OpenAI-layout CLIP ViT whose class token, after ln_post, is multiplied by
    CSD's `last_layer_style`. Read with ComfyUI's OpenAI-to-transformers key conversion into transformers'
    CLIPVisionModelWithProjection, with the style head as its projection."""

    def __init__(self, path):
        from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

        sd = read_weights(path, "--csd")
        sd = {key.removeprefix("module."): value for key, value in sd.get("model_state_dict", sd).items()}
        if "backbone.conv1.weight" not in sd or "last_layer_style" not in sd:
            raise SystemExit(f"--csd {path}: not a CSD checkpoint (no backbone.conv1.weight or last_layer_style)")
        vision = {key.removeprefix("backbone."): value for key, value in sd.items() if key.startswith("backbone.")}
        config = _vision_config(CLIPVisionConfig, vision, projection_dim=sd["last_layer_style"].shape[1])
        import_comfy()
        from comfy.clip_vision import convert_to_transformers

        weights = convert_to_transformers(vision, "")
        weights["visual_projection.weight"] = sd["last_layer_style"].t()
        self.model = CLIPVisionModelWithProjection(config)
        self.model.load_state_dict(weights)
        self.model.eval()
        size = config.image_size  # CSD's preprocessing is CLIP's: shorter side to the input size, centre crop
        self.processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})

    @torch.no_grad()
    def images(self, images):
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.model.device)
        return unit(self.model(pixel_values=pixels).image_embeds)


def _vision_config(config_class, vision, projection_dim):
    """The transformers config of an OpenAI-layout CLIP ViT, read from its weights' shapes."""
    width, _, patch, _ = vision["conv1.weight"].shape
    grid = math.isqrt(vision["positional_embedding"].shape[0] - 1)
    layers = 1 + max(int(key.split(".")[2]) for key in vision if key.startswith("transformer.resblocks."))
    return config_class(hidden_size=width, intermediate_size=vision["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
                        num_hidden_layers=layers, num_attention_heads=width // 64,  # OpenAI's rule for its ViTs
                        image_size=grid * patch, patch_size=patch, projection_dim=projection_dim,
                        hidden_act="quick_gelu", layer_norm_eps=1e-5)


class Aesthetic:
    """LAION's improved aesthetic predictor: five linear layers (dropouts between, no activation) on a
    unit-length CLIP ViT-L/14 image embedding."""

    def __init__(self, path, embedding_width):
        sd = read_weights(path, "--aesthetic")
        sd = sd.get("state_dict", sd)
        if sorted(sd) != sorted(f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")):
            raise SystemExit(f"--aesthetic {path}: not LAION's aesthetic predictor (layers.0/2/4/6/7 expected)")
        widths = [sd["layers.0.weight"].shape[1]] + [sd[f"layers.{i}.weight"].shape[0] for i in (0, 2, 4, 6, 7)]
        if widths[0] != embedding_width:
            raise SystemExit(f"--aesthetic {path}: it reads {widths[0]}-wide CLIP embeddings but the --clip model gives "
                             f"{embedding_width}-wide ones; it was trained on CLIP ViT-L/14 (768)")
        linear = [torch.nn.Linear(a, b) for a, b in zip(widths, widths[1:])]
        layers = torch.nn.Sequential(linear[0], torch.nn.Dropout(), linear[1], torch.nn.Dropout(), linear[2],
                                     torch.nn.Dropout(), linear[3], linear[4])
        self.predictor = torch.nn.ModuleDict({"layers": layers})  # the file's key names
        self.predictor.load_state_dict(sd)
        self.predictor.eval()

    @torch.no_grad()
    def __call__(self, embeddings):
        return self.predictor.to(embeddings.device, embeddings.dtype)["layers"](embeddings).squeeze(-1)


class Scorer:
    """Every metric whose weights were given, for (image, reference, prompt) triples. The weights are read
    on the CPU (so a bad file stops the harness before it generates anything); `to` moves them."""

    def __init__(self, clip, csd=None, aesthetic=None):
        check_files(clip, csd, aesthetic)
        self.clip = load_clip(clip)
        self.csd = CSD(csd) if csd else None
        width = self.clip.model.config.projection_dim
        self.aesthetic = Aesthetic(aesthetic, width) if aesthetic else None

    def to(self, device):
        for model in (self.clip.model, self.csd and self.csd.model):
            if model is not None:
                model.to(device)
        return self

    @property
    def columns(self):
        return [name for name, on in (("text_alignment", True), ("style_clip", True), ("style_csd", self.csd),
                                      ("aesthetic", self.aesthetic)) if on]

    def score(self, triples):
        """[{metric: value}] in the triples' order."""
        images = _embed(self.clip.image_files, [image for image, _, _ in triples])
        references = _embed(self.clip.image_files, [reference for _, reference, _ in triples])
        texts = _embed(self.clip.texts, [prompt for _, _, prompt in triples])
        scores = {"text_alignment": (images * texts).sum(-1), "style_clip": (images * references).sum(-1)}
        if self.csd:
            scores["style_csd"] = (_embed(_of_files(self.csd.images), [i for i, _, _ in triples])
                                   * _embed(_of_files(self.csd.images), [r for _, r, _ in triples])).sum(-1)
        if self.aesthetic:
            scores["aesthetic"] = self.aesthetic(images)
        return [{name: float(values[i]) for name, values in scores.items()} for i in range(len(triples))]


def _embed(embed, items):
    """embed(items), each distinct item computed once, in batches."""
    unique = list(dict.fromkeys(items))
    found = {}
    for start in range(0, len(unique), BATCH):
        chunk = unique[start:start + BATCH]
        found.update(zip(chunk, embed(chunk)))
    return torch.stack([found[item] for item in items])


def _of_files(embed_images):
    """An image embedder that takes file paths."""
    return lambda paths: embed_images([read_rgb(path) for path in paths])
