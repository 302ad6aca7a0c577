"""DEADiff's training objective (docs/DESIGN.md, Training): ε-prediction MSE on SD1.5's DDPM schedule, with the
reference tokens entering the frozen UNet through the shared attn2 patches."""
import torch
import torch.nn.functional as F

from ..layers import BRANCHES


class SD15NoiseSchedule:
    """Scaled-linear betas 0.00085 -> 0.012 over 1000 steps (LDM's "linear" schedule)."""

    def __init__(self, steps=1000, beta_start=0.00085, beta_end=0.012):
        betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, steps, dtype=torch.float64) ** 2
        self.alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        self.steps = steps

    def add_noise(self, latents, noise, timesteps):
        """x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε, row by row."""
        alpha = self.alphas_cumprod.to(latents.device)[timesteps].to(latents.dtype).view(-1, *[1] * (latents.ndim - 1))
        return alpha.sqrt() * latents + (1 - alpha).sqrt() * noise


class DEADiffObjective(torch.nn.Module):
    """The trainable modules, and as forward the loss of one micro-batch: what DDP / FSDP wrap.

    The frozen UNet is held outside the module tree, so data parallelism neither broadcasts nor
    shards it; it is reached through `transformer_options`, whose attn2 patches read this step's
    tokens from `injection` (a PerSampleInjection over `projections`).
    """

    def __init__(self, encoder, projections, unet, transformer_options, injection, schedule):
        super().__init__()
        self.encoder = encoder
        self.projections = projections
        self.frozen = _Frozen(unet, transformer_options, injection, schedule)

    def forward(self, vision, latents, context, noise, timesteps, keep_style, keep_content):
        tokens = self.encoder(vision)
        self.frozen.injection.set_batch(tokens, dict(zip(BRANCHES, (keep_style, keep_content))))
        noisy = self.frozen.schedule.add_noise(latents, noise, timesteps)
        # ComfyUI writes its bookkeeping (block, transformer_index, ...) into the dict it is given
        options = dict(self.frozen.transformer_options)
        predicted = self.frozen.unet(noisy, timesteps.float(), context=context, transformer_options=options)
        return F.mse_loss(predicted.float(), noise.float())


class _Frozen:
    """Plain holder (not an nn.Module) for what the objective uses but must not own."""

    def __init__(self, unet, transformer_options, injection, schedule):
        self.unet, self.transformer_options, self.injection, self.schedule = unet, transformer_options, injection, schedule
