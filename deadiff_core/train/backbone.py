"""The frozen parts DEADiff trains against, as ComfyUI loads and runs them: the SD1.x UNet, VAE and
text encoder from one checkpoint, and a CLIP vision model (needs ComfyUI)."""
import importlib
import logging
from dataclasses import dataclass

import torch

log = logging.getLogger("deadiff")
WEIGHT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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
        options = {"dtype": WEIGHT_DTYPES[precision]}
        model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(resolve(model_config.checkpoint), output_clipvision=False,
                                                                    model_options=options)
        backbone = Backbone(model, clip, vae)
    if model_config.clip_vision:
        backbone.clip_vision = comfy.clip_vision.load(resolve(model_config.clip_vision))
        if backbone.clip_vision is None:
            raise ValueError(f"{model_config.clip_vision}: not a CLIP vision model ComfyUI recognises")
    return backbone


def on_training_device(backbone, device):
    """The UNet on `device` for good, frozen, in eval mode; a patcher that never offloads it (the
    trainer calls the UNet directly; ComfyUI's loader only sees it when validation samples)."""
    import comfy.model_patcher

    base = backbone.model.model
    model_type = getattr(base, "model_type", None)
    if model_type is not None and model_type.name != "EPS":
        raise ValueError(f"DEADiff trains an ε-prediction SD1.x model; this checkpoint predicts {model_type.name}")
    base.to(device).eval().requires_grad_(False)
    backbone.model = comfy.model_patcher.ModelPatcher(base, load_device=device, offload_device=device)
    return backbone


class FrozenEncoders:
    """Turns a batch of images and captions into the UNet's inputs, without gradients."""

    def __init__(self, backbone, vision, device):
        self.backbone, self.vision, self.device = backbone, vision, device
        self.latent_format = backbone.model.model.latent_format  # SD1.x: x 0.18215

    @torch.no_grad()
    def latents(self, images):
        return self.latent_format.process_in(self.backbone.vae.encode(images)).to(self.device, torch.float32)

    @torch.no_grad()
    def vision_states(self, references):
        # DEADiff squashes the reference (docs/DESIGN.md, Encoder): crop=False
        hidden = self.vision.encode_image(references, crop=False)["penultimate_hidden_states"]
        return hidden.to(self.device, torch.float32)

    @torch.no_grad()
    def text(self, captions):
        """[B, 77, 768]: each caption through ComfyUI's CLIP, cut to its first 77-token window."""
        clip = self.backbone.clip
        rows = [clip.encode_from_tokens(clip.tokenize(caption))[:, :77] for caption in captions]
        return torch.cat(rows).to(self.device, torch.float32)


def conditioning(clip, text):
    """What ComfyUI's CLIPTextEncode gives for `text`: [[cond, {"pooled_output": ...}]]."""
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))
