"""The frozen backbone (../backbone.py) on the training device, and what training reads through it: latents,
the reference's vision states and the captions' text states (needs ComfyUI)."""
import torch


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
        """[B, 257, 1024]: what inference's DEADiff Encode reads of the references (a ViT-L/14 is checked for)."""
        from ..comfy_vision import vision_hidden_states  # imports ComfyUI

        return vision_hidden_states(self.vision, references).to(self.device, torch.float32)

    @torch.no_grad()
    def text(self, captions):
        """[B, 77, 768]: each caption through ComfyUI's CLIP, cut to its first 77-token window."""
        clip = self.backbone.clip
        rows = [clip.encode_from_tokens(clip.tokenize(caption))[:, :77] for caption in captions]
        return torch.cat(rows).to(self.device, torch.float32)
