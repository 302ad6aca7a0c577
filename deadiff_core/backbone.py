"""The SD1.x models DEADiff works against, loaded as ComfyUI loads them, outside a ComfyUI server: the UNet,
VAE and text encoder from one checkpoint, and a CLIP vision model (the trainer and the data builder; needs
ComfyUI, see comfy_runtime.py)."""
import importlib
from dataclasses import dataclass, field

from .precision import DTYPES


@dataclass
class ModelConfig:
    """A config file's [model] section."""
    checkpoint: str = ""            # any SD1.x checkpoint: UNet, VAE and text encoder (ComfyUI loads it)
    clip_vision: str = ""           # CLIP ViT-L/14 file; default: the start's own ViT (DEADiff / BLIP-Diffusion)
    factory: str = ""               # "module:function" returning a Backbone instead (dry runs, tests)
    factory_args: dict = field(default_factory=dict)


@dataclass
class Backbone:
    model: object               # comfy ModelPatcher around an SD1.x BaseModel
    clip: object                # comfy.sd.CLIP
    vae: object                 # comfy.sd.VAE
    clip_vision: object = None  # comfy.clip_vision.ClipVisionModel, or None (then the start's own ViT)


def load_backbone(model_config, resolve, precision):
    """From model.checkpoint (+ model.clip_vision), or from model.factory ("module:function")."""
    import comfy.clip_vision
    import comfy.sd

    if model_config.factory:
        module, _, name = model_config.factory.partition(":")
        backbone = getattr(importlib.import_module(module), name)(**model_config.factory_args)
    else:
        # frozen weights may be stored in the autocast precision; the trained ones stay fp32
        options = {"dtype": DTYPES[precision]}
        model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(resolve(model_config.checkpoint), output_clipvision=False,
                                                                    model_options=options)
        backbone = Backbone(model, clip, vae)
    if model_config.clip_vision:
        backbone.clip_vision = comfy.clip_vision.load(resolve(model_config.clip_vision))
        if backbone.clip_vision is None:
            raise ValueError(f"{model_config.clip_vision}: not a CLIP vision model ComfyUI recognises")
    return backbone


def conditioning(clip, text):
    """What ComfyUI's CLIPTextEncode gives for `text`: [[cond, {"pooled_output": ...}]]."""
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))
