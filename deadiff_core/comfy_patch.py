"""The object ComfyUI calls for each of SD1.5's 16 cross-attention layers: an attn2 replace patch
that joins the reference's keys/values to the text ones (needs ComfyUI).

Inference and training share the patch; what differs is where its image keys/values come from,
an injection provider (injection_provider.InjectionProvider):
- `Injection` (inference): one token set per layer for every row, projected once and cached;
  rows see it or zeros by CFG pass and schedule.
- `deadiff_core.train.injection.PerSampleInjection` (training): each row its own tokens, projected
  on every step with gradients, zeroed per row (branch left out, or image tokens dropped).
"""
import math
from dataclasses import dataclass, field

import comfy.ldm.modules.attention
from comfy.patcher_extension import CallbacksMP, WrappersMP
import torch
import torch.nn.functional as F

from .attention import blend_by_region, image_keys_values, join_keys_values, rows_with_image
from .finite_check import FiniteWatch
from .injection_provider import InjectionProvider
from .layers import MODES, SD15_LAYERS
from .token_bounds import check_magnitudes

UNCOND = 1  # ComfyUI's cond_or_uncond flag of the negative pass
POSITIVE, NEGATIVE = "positive", "negative"  # the reference the conditional rows read, and the negative pass's


class BranchNotLoaded(ValueError):
    """A mode asks for a branch the adapter was loaded without."""


@dataclass(frozen=True)
class InjectionSettings:
    mode: str = "style"
    weight: float = 1.0
    style_weight: float = 1.0
    content_weight: float = 1.0
    key_weight: float = 1.0
    value_weight: float = 1.0
    layer_weights: tuple = (1.0,) * len(SD15_LAYERS)
    start_sigma: float = math.inf
    end_sigma: float = 0.0
    combine: str = "average"
    mask: torch.Tensor = field(default=None, compare=False)  # [M, H, W] in 0..1, 1 = use the reference

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; use one of {', '.join(MODES)}")
        for name in ("weight", "style_weight", "content_weight", "key_weight", "value_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if len(self.layer_weights) != len(SD15_LAYERS):
            raise ValueError(f"layer_weights needs {len(SD15_LAYERS)} numbers, got {len(self.layer_weights)}")
        if self.end_sigma > self.start_sigma:
            raise ValueError("end_at comes before start_at: the reference would never be used")
        if self.mask is not None:
            object.__setattr__(self, "mask", checked_mask(self.mask))

    def layer_weight(self, layer):
        branch = self.style_weight if layer.branch == "style" else self.content_weight
        return self.weight * branch * self.layer_weights[layer.index]

    def key_value_weights(self, layer):
        weight = self.layer_weight(layer)
        return weight * self.key_weight, weight * self.value_weight


def checked_mask(mask):
    """A MASK as [M, H, W] float in 0..1, or ValueError saying what is wrong with it."""
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3 or mask.shape[0] == 0 or min(mask.shape[1:]) < 2:
        raise ValueError(f"the mask must be [H, W] or [N, H, W] with sides of 2 px or more, got {tuple(mask.shape)}")
    mask = mask.float()
    if not torch.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
        raise ValueError("mask values must be finite and within 0..1")
    return mask


def _check_fits(tokens, branch, deadiff, reference="reference"):
    """The tokens could have come from this DEADiff model: its width, token count and magnitudes."""
    width, queries = deadiff.info.qformer.hidden_size, deadiff.info.qformer.num_query_tokens
    if tokens.shape[-1] != width or tokens.shape[1] != queries:
        raise ValueError(f"the {reference}'s {branch} tokens are {tokens.shape[1]} per reference, {tokens.shape[-1]} "
                         f"wide; this DEADiff model makes {queries}, {width} wide: encode the {reference} with the same "
                         "DEADiff model")
    check_magnitudes(tokens, deadiff.token_bound(branch), branch)


def _active_tokens(deadiff, sources, settings, reference):
    """{branch: tokens} of the branches the mode routes, checked against the model; `sources`: {branch:
    ReferenceTokens}."""
    tokens = {}
    for branch in MODES[settings.mode]:
        if branch not in deadiff.info.branches:
            raise BranchNotLoaded(f"mode {settings.mode!r} needs the {branch} branch, but this DEADiff model was "
                                  f"loaded with {' + '.join(deadiff.info.branches)} only.")
        if sources[branch][branch] is None:
            raise ValueError(f"mode {settings.mode!r} needs {branch} tokens, but the {branch} {reference} only has "
                             f"{' and '.join(sources[branch].branches)}; pick a mode it has or a full DEADiff model")
        _check_fits(sources[branch][branch], branch, deadiff, reference)
        tokens[branch] = sources[branch].combined(branch, settings.combine)
    return tokens


def _check_negative_count(sources, negative, settings):
    """Kept apart (concat, per latent), references set how many image tokens a row joins or which latent reads
    which, so the negative reference needs as many references as the reference of the same layers."""
    if settings.combine == "average":
        return
    for branch in MODES[settings.mode]:
        wanted = sources[branch].num_references
        if negative.num_references != wanted:
            raise ValueError(f"with combine {settings.combine!r} the negative reference needs as many references as "
                             f"the {branch} reference ({wanted}), but it has {negative.num_references}; give it "
                             "as many, or combine by average")


class Injection(InjectionProvider):
    """State shared by the 16 layer patches of one DEADiff Apply: which tokens each layer reads, with
    what weight, when, where; image keys/values computed once per device and dtype.

    A layer reads one token set for every latent ([T, D]), or with combine "per latent" one per latent
    ([N, T, D], reference i for latent i: per-row keys/values, as training's PerSampleInjection feeds them).
    The conditional rows read the reference; the negative (CFG) pass reads the negative reference, routed by
    the same mode, or DEADiff's zero tokens without one (the official behaviour)."""

    def __init__(self, deadiff, tokens, settings, content_tokens=None, layer_widths=None, negative_tokens=None):
        """layer_widths: key/value width per layer index, for the zero rows of layers whose projections a
        one-branch adapter lacks (their branch has no tokens, so they only ever see zeros)."""
        self.patcher = deadiff.projections_patcher
        self.layer_widths = layer_widths or {}
        self.settings = settings
        zeros = torch.zeros(deadiff.info.qformer.num_query_tokens, deadiff.info.qformer.hidden_size)
        sources = {"style": tokens, "content": content_tokens or tokens}
        references = {POSITIVE: _active_tokens(deadiff, sources, settings, "reference")}
        if negative_tokens is not None:
            references[NEGATIVE] = _active_tokens(deadiff, {"style": negative_tokens, "content": negative_tokens},
                                                  settings, "negative reference")
            _check_negative_count(sources, negative_tokens, settings)
        self.layer_tokens = {source: {layer.index: active.get(layer.branch, zeros) for layer in SD15_LAYERS}
                             for source, active in references.items()}
        self._cache = {}

    def image_keys_values(self, layer, extra_options, batch, device, dtype):
        flags = extra_options.get("cond_or_uncond") or [0]
        latents = batch // len(flags)
        # without a negative reference the negative rows are zeroed below, whatever they read
        negative = NEGATIVE if NEGATIVE in self.layer_tokens else POSITIVE
        chunks = [self._per_latent(self.keys_values(layer, negative if flag == UNCOND else POSITIVE, device, dtype),
                                   latents) for flag in flags]
        keys_values = tuple(torch.cat(parts) for parts in zip(*chunks))
        return rows_with_image(keys_values, self.use_image(extra_options, batch, device))

    @staticmethod
    def _per_latent(keys_values, latents):
        """One pass's image keys/values for its `latents` rows: [latents, T, C]."""
        keys, values = keys_values
        if keys.ndim == 2:
            return keys.expand(latents, -1, -1), values.expand(latents, -1, -1)
        if keys.shape[0] != latents:
            raise ValueError(f"DEADiff combine 'per latent': {keys.shape[0]} references for a batch of {latents} "
                             "latents; give one reference per latent (or combine them by average or concat)")
        return keys, values

    def models(self):
        return [self.patcher]

    def keys_values(self, layer, source, device, dtype):
        """The layer's weighted image keys/values for the reference `source` reads: [T, C], or [N, T, C] per latent."""
        key = (device, dtype)
        if key not in self._cache:
            self._cache[key] = {source: self._project(tokens, device, dtype) for source, tokens in self.layer_tokens.items()}
        cached = self._cache[key][source]
        if layer.index not in cached:
            tokens = self.layer_tokens[source][layer.index]
            zeros = torch.zeros(*tokens.shape[:-1], self.layer_widths[layer.index], device=device, dtype=dtype)
            cached[layer.index] = (zeros, zeros)
        return cached[layer.index]

    def _project(self, layer_tokens, device, dtype):
        projections = self.patcher.model
        # projected on the UNet's device (ComfyUI's ops bring the weights there, also where DynamicVRAM
        # keeps them offloaded) in the weights' dtype, then handed over in the UNet's
        weight_dtype = next(projections.parameters()).dtype
        with torch.no_grad():
            return {layer.index: tuple(t.to(dtype) for t in image_keys_values(
                        projections[layer.index], layer_tokens[layer.index].to(device, weight_dtype),
                        *self.settings.key_value_weights(layer)))
                    for layer in SD15_LAYERS if layer.index in projections}

    def use_image(self, extra_options, batch, device):
        """Rows of the batch that see a reference: conditional rows, and the negative pass's where a negative
        reference is given, within start/end."""
        flags = extra_options.get("cond_or_uncond") or [0]
        negative = NEGATIVE in self.layer_tokens
        rows = torch.tensor([negative or flag != UNCOND for flag in flags], device=device).repeat_interleave(batch // len(flags))
        sigmas = extra_options.get("sigmas")
        if sigmas is not None:
            sigmas = sigmas.to(device).reshape(-1)
            in_range = (sigmas <= self.settings.start_sigma) & (sigmas >= self.settings.end_sigma)
            rows = rows & (in_range if in_range.numel() == batch else in_range[:1].expand(batch))
        return rows

    def region(self, extra_options, length, batch, device, dtype):
        """The mask resized to this layer's token grid: [B or 1, L, 1], or None without a mask."""
        mask = self.settings.mask
        if mask is None:
            return None
        height, width = extra_options["original_shape"][-2:]
        mask_height, mask_width = mask.shape[-2:]
        if abs((mask_width / mask_height) / (width / height) - 1) > 0.1:
            raise ValueError(f"DEADiff mask is {mask_width}x{mask_height}, the image {width * 8}x{height * 8}: "
                             "give a mask with the image's aspect ratio (ideally the same size)")
        grid = next(((math.ceil(height / s), math.ceil(width / s)) for s in (1, 2, 4, 8, 16)
                     if math.ceil(height / s) * math.ceil(width / s) == length), None)
        if grid is None:
            raise ValueError(f"DEADiff mask: cannot map {length} attention tokens onto a {height}x{width} latent")
        region = F.interpolate(mask[:, None].to(device, dtype), size=grid, mode="bilinear").flatten(1)[..., None]
        chunks = len(extra_options.get("cond_or_uncond") or [0])
        if region.shape[0] not in (1, batch // chunks):
            raise ValueError(f"DEADiff mask: {region.shape[0]} masks for a batch of {batch // chunks} latents; "
                             "give one mask, or one per latent")
        return region if region.shape[0] == 1 else region.repeat(chunks, 1, 1)


class DEADiffAttentionPatch:
    """attn2 replace patch for one layer. Composes with other packs' attention patches both ways:
    - one set before is wrapped (`inner`): it then computes attention over the joined keys/values;
    - one set after joins through `add()`, the protocol IPAdapter_plus uses when a key already holds a replace
      patch: `callback(out, q, k, v, extra_options, **kwargs)` returns a term added to this layer's output,
      while kwargs' sigma_end <= sigma <= sigma_start when it names them.
    A clone of the MODEL gets its own copies (own_patches_on_clone), so adding to a clone never changes the
    MODEL it came from; copies share the injection, whose weights ride along through models(), and the wrapped
    patch, which nothing changes once wrapped."""

    def __init__(self, injection: InjectionProvider, layer, inner=None, added=(), watch=None):
        self.injection = injection
        self.layer = layer
        self.inner = inner
        self.added = list(added)
        self.watch = watch

    def add(self, callback, **kwargs):
        self.added.append((callback, kwargs))

    def __call__(self, q, k, v, extra_options):
        k_image, v_image = self.injection.image_keys_values(self.layer, extra_options, q.shape[0], q.device, q.dtype)
        out = self._attend(q, *join_keys_values(k, v, k_image, v_image), extra_options)
        region = self.injection.region(extra_options, q.shape[1], q.shape[0], q.device, q.dtype)
        if region is not None:
            without = self._attend(q, *join_keys_values(k, v, torch.zeros_like(k_image), torch.zeros_like(v_image)), extra_options)
            out = blend_by_region(out, without, region)
        if self.watch is not None:
            self.watch.note(self.layer.index, out)
        return self._with_added_terms(out, q, k, v, extra_options)

    def _attend(self, q, k, v, extra_options):
        if self.inner is not None:
            return self.inner(q, k, v, extra_options)
        return comfy.ldm.modules.attention.optimized_attention(
            q, k, v, extra_options["n_heads"], attn_precision=extra_options.get("attn_precision"), transformer_options=extra_options)

    def _with_added_terms(self, out, q, k, v, extra_options):
        if not self.added:
            return out
        sigmas = extra_options.get("sigmas")
        sigma = sigmas.reshape(-1)[0].item() if sigmas is not None else math.inf  # the batch's first row, as IPAdapter_plus
        for callback, kwargs in self.added:
            if kwargs.get("sigma_end", -math.inf) <= sigma <= kwargs.get("sigma_start", math.inf):
                out = out + callback(out, q, k, v, extra_options, **kwargs)
        return out.to(q.dtype)

    def models(self):
        inner = self.inner.models() if hasattr(self.inner, "models") else []
        return [*self.injection.models(), *inner]

    def to(self, device_or_dtype):
        if hasattr(self.inner, "to"):
            self.inner = self.inner.to(device_or_dtype)
        return self

    def copy(self):
        return DEADiffAttentionPatch(self.injection, self.layer, self.inner, self.added, self.watch)

    def __deepcopy__(self, memo):
        return self  # ComfyUI 0.3.75 deep-copies a MODEL's options on clone: never its weights; see copy()


def own_patches_on_clone(original, clone):
    """ModelPatcher ON_CLONE callback. ComfyUI 0.33 copies only the dicts and lists of a MODEL's options on
    clone, sharing the patch objects, and IPAdapter_plus adds its term to the patch it finds on its clone."""
    attn2 = clone.model_options["transformer_options"].get("patches_replace", {}).get("attn2", {})
    for key, patch in attn2.items():
        if isinstance(patch, DEADiffAttentionPatch):
            attn2[key] = patch.copy()


CONTEXT_FAMILIES = {1024: "an SD2.x-family model", 2048: "an SDXL-family model", 1280: "an SDXL refiner"}


def _layer_mismatch(unet, projections):
    """Why this UNet's cross-attention layers do not fit the adapter's projections, or None."""
    for layer in SD15_LAYERS:
        try:
            attn2 = unet.get_submodule(layer.attn2_path)
        except AttributeError:
            return f"it has no cross-attention at {layer.ldm_block}"
        context, channels = attn2.to_k.in_features, attn2.to_q.in_features
        expected = projections[layer.index].i_to_k.out_features if layer.index in projections else channels
        if context != 768 or channels != expected:
            return f"text context {context} and {channels} channels at {layer.ldm_block}, where SD1.x has 768 and {expected}"
    return None


def check_sd1_model(model, projections):
    """Refuse anything but an SD1.x UNet whose cross-attention layers match the adapter's projections
    (an ImageProjections; layers it lacks are checked against SD1.x's text-context width only)."""
    config = getattr(model.model, "model_config", None)
    family = type(config).__name__ if config is not None else type(model.model).__name__
    context = (getattr(config, "unet_config", None) or {}).get("context_dim")
    if context in CONTEXT_FAMILIES:
        reason = f"{CONTEXT_FAMILIES[context]} (text context {context}, SD1.x has 768)"
    else:
        reason = _layer_mismatch(model.get_model_object("diffusion_model"), projections)
    if reason:
        raise ValueError(f"DEADiff's released weights are for SD1.x models (SD1.5 and its fine-tunes); this MODEL is "
                         f"{family}: {reason}. Load an SD1.5-based checkpoint for DEADiff.")


def install_patches(model, injection):
    """A clone of `model` whose 16 cross-attention layers read image keys/values from `injection`."""
    patched = model.clone()
    existing = patched.model_options["transformer_options"].get("patches_replace", {}).get("attn2", {})
    watch = FiniteWatch(len(SD15_LAYERS))
    for layer in SD15_LAYERS:
        patch = DEADiffAttentionPatch(injection, layer, inner=existing.get(layer.patch_key), watch=watch)
        patched.set_model_attn2_replace(patch, *layer.patch_key)
    patched.add_wrapper_with_key(WrappersMP.APPLY_MODEL, "deadiff", watch.apply_model_wrapper)
    if not patched.get_callbacks(CallbacksMP.ON_CLONE, "deadiff"):
        patched.add_callback_with_key(CallbacksMP.ON_CLONE, "deadiff", own_patches_on_clone)
    return patched


def key_widths(model):
    """Width of the text keys in each of the 16 cross-attention layers of an SD1.x MODEL."""
    unet = model.get_model_object("diffusion_model")
    return {layer.index: unet.get_submodule(layer.attn2_path).to_k.out_features
            for layer in SD15_LAYERS}


def apply_deadiff(model, deadiff, tokens, settings, content_tokens=None, negative_tokens=None):
    """A clone of `model` with DEADiff on all 16 cross-attention layers; `model` itself is untouched."""
    check_sd1_model(model, deadiff.adapter.projections)
    return install_patches(model, Injection(deadiff, tokens, settings, content_tokens, key_widths(model), negative_tokens))
