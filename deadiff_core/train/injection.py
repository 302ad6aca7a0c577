"""Training's injection: the same attn2 patches as inference (comfy_patch.py), fed per-row tokens.

Each row of a training batch has its own reference, so its own tokens [B, T, D]; a row's branch
is zeroed where its pair kind leaves the branch out or its image tokens were dropped (docs/DESIGN.md, Training).
Keys and values are projected on every call, inside autograd, so the loss reaches i_to_k / i_to_v
and, through the tokens, both Q-Formers.
"""
from ..attention import image_keys_values, rows_with_image
from ..comfy_patch import install_patches
from ..injection_provider import InjectionProvider
from ..layers import BRANCHES


class PerSampleInjection(InjectionProvider):
    def __init__(self, projections):
        self.projections = projections
        self._tokens = None
        self._keep = None

    def set_batch(self, tokens, keep):
        """tokens: {branch: [B, T, D]}; keep: {branch: [B] bool}, False = 16 zero tokens in that row."""
        sizes = {t.shape[0] for t in tokens.values()} | {k.shape[0] for k in keep.values()}
        if set(tokens) != set(BRANCHES) or set(keep) != set(BRANCHES) or len(sizes) != 1:
            raise ValueError(f"need tokens and keep flags of one batch size for {BRANCHES}, got "
                             f"{ {b: tuple(t.shape) for b, t in tokens.items()} } / { {b: tuple(k.shape) for b, k in keep.items()} }")
        self._tokens, self._keep = tokens, keep

    def image_keys_values(self, layer, extra_options, batch, device, dtype):
        if self._tokens is None:
            raise RuntimeError("PerSampleInjection.set_batch was not called before the UNet forward")
        tokens, keep = self._tokens[layer.branch], self._keep[layer.branch]
        if tokens.shape[0] != batch:
            raise ValueError(f"the UNet batch has {batch} rows but the tokens {tokens.shape[0]}")
        keys_values = image_keys_values(self.projections[layer.index], tokens, 1.0, 1.0)
        return tuple(t.to(dtype) for t in rows_with_image(keys_values, keep.to(device)))

    def region(self, extra_options, length, batch, device, dtype):
        return None

    def models(self):
        return []  # the trainer keeps its modules on its device; ComfyUI must not offload them


def patched_transformer_options(model, injection):
    """ComfyUI transformer_options that route the 16 attn2 layers of `model` through `injection`."""
    return install_patches(model, injection).model_options["transformer_options"]

