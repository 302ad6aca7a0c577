"""The last line of defence against a black image: attention that overflowed (NaN or inf) is reported, by
layer, instead of flowing on through the sampler (needs ComfyUI for its wrapper protocol only)."""
import torch


class NonFiniteAttentionError(RuntimeError):
    pass


class FiniteWatch:
    """Shared by the patches of one DEADiff Apply: note() marks the layers whose output is not finite without
    waiting for the device; apply_model_wrapper, a ComfyUI APPLY_MODEL wrapper, looks once per UNet call."""

    def __init__(self, layer_count):
        self.layer_count = layer_count
        self.flags = {}

    def note(self, index, out):
        flags = self.flags.get(out.device)
        if flags is None:
            flags = self.flags[out.device] = torch.zeros(self.layer_count, dtype=torch.bool, device=out.device)
        flags[index] |= ~torch.isfinite(out.detach()).all()  # detached: isfinite's abs() would keep `out` for backward

    def raise_if_any(self, sigma):
        for flags in self.flags.values():
            if flags.any():
                layers = flags.nonzero().flatten().tolist()
                flags.zero_()
                raise NonFiniteAttentionError(
                    f"DEADiff: cross-attention layer{'s' if len(layers) > 1 else ''} {', '.join(map(str, layers))} "
                    f"produced NaN or infinite values at sigma {sigma:.4g}, so the image would come out black: the "
                    "reference's keys and values overflowed the model's precision. Lower the weight or the layer "
                    "weights, or run the model in a wider precision (bf16 or fp32).")

    def apply_model_wrapper(self, executor, x, sigma, *args, **kwargs):
        out = executor(x, sigma, *args, **kwargs)
        self.raise_if_any(float(sigma.reshape(-1)[0]))
        return out
