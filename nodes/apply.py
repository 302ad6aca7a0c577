"""DEADiffApply / DEADiffApplyAdvanced: MODEL -> MODEL with DEADiff on its 16 cross-attention layers."""
import math

from ..deadiff_core.comfy_patch import InjectionSettings, apply_deadiff
from ..deadiff_core.layer_weights import PRESETS, format_weights, parse_layer_weights
from ..deadiff_core.layers import MODES, SD15_LAYERS
from ..deadiff_core.tokens import COMBINE_METHODS
from .errors import node_error

WEIGHT = {"min": 0.0, "max": 5.0, "step": 0.05}
# The layer map (web/deadiff.js) draws from these, sent with the node definition: the editor mirrors no table.
LAYER_MAP_OPTIONS = {
    "deadiff_layers": [{"index": layer.index, "block": layer.ldm_block, "stage": layer.stage,
                        "resolution": layer.resolution_at_512px, "branch": layer.branch} for layer in SD15_LAYERS],
    "deadiff_presets": {name: list(weights) for name, weights in PRESETS.items()},
}


def _basic_inputs():
    return {
        "model": ("MODEL", {"tooltip": "An SD1.x model (SD1.5 or a fine-tune); SDXL and SD2.x are not supported."}),
        "deadiff": ("DEADIFF", {"tooltip": "From Load DEADiff Model."}),
        "tokens": ("DEADIFF_TOKENS", {"tooltip": "From DEADiff Encode, Mix or Load Tokens."}),
        "mode": (list(MODES), {
            "default": "style",
            "tooltip": "style: the reference's style, the prompt's subject (the official default). content: the "
                       "reference's subject, the prompt's style. style and content: both."}),
        "weight": ("FLOAT", {"default": 1.0, **WEIGHT,
                             "tooltip": "Scales the reference's keys and values (official img_weight: 1.0; 0-2 is useful)."}),
        "start_at": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                               "tooltip": "Fraction of denoising after which the reference starts acting."}),
        "end_at": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                             "tooltip": "Fraction of denoising after which the reference stops acting "
                                        "(the layers then see DEADiff's 'no reference' zero tokens)."}),
    }


def _patched_model(node, model, deadiff, tokens, start_at, end_at, content_tokens=None, negative_tokens=None,
                   **settings):
    sampling = model.get_model_object("model_sampling")
    try:
        if not all(math.isfinite(v) and 0 <= v <= 1 for v in (start_at, end_at)):
            raise ValueError(f"start_at={start_at} and end_at={end_at} must be fractions within 0..1")
        settings = InjectionSettings(start_sigma=sampling.percent_to_sigma(start_at),
                                     end_sigma=sampling.percent_to_sigma(end_at), **settings)
        return (apply_deadiff(model, deadiff, tokens, settings, content_tokens, negative_tokens),)
    except ValueError as e:
        raise node_error(node, e) from e


class DEADiffApply:
    SEARCH_ALIASES = ["deadiff", "style transfer", "reference", "style reference", "image prompt", "apply style",
                      "stylize"]
    DESCRIPTION = ("Conditions an SD1.x MODEL on a reference: style tokens go to the fine cross-attention layers, "
                   "content tokens to the coarse ones, joined to the text keys/values as in the DEADiff paper. "
                   "Defaults reproduce the official inference.")
    CATEGORY = "DEADiff"
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("A copy of the model with DEADiff applied; the input model is left unchanged.",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": _basic_inputs()}

    def apply(self, model, deadiff, tokens, mode, weight, start_at, end_at):
        return _patched_model("DEADiff Apply", model, deadiff, tokens, start_at, end_at, mode=mode, weight=weight)


class DEADiffApplyAdvanced:
    SEARCH_ALIASES = ["deadiff", "style transfer", "style reference", "regional style", "masked style",
                      "layer weights", "style and content", "negative reference", "batch references"]
    DESCRIPTION = ("DEADiff Apply with every control: separate style and content weights and references, "
                   "per-layer weights, how several references combine (or one per latent), a mask limiting the "
                   "reference to a region, a negative reference, and separate key and value weights.")
    CATEGORY = "DEADiff"
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = DEADiffApply.OUTPUT_TOOLTIPS
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                **_basic_inputs(),
                "style_weight": ("FLOAT", {"default": 1.0, **WEIGHT, "tooltip": "Extra factor on the 11 style layers."}),
                "content_weight": ("FLOAT", {"default": 1.0, **WEIGHT, "tooltip": "Extra factor on the 5 content layers."}),
                "layer_weights": ("STRING", {
                    "default": format_weights(PRESETS["all"]),
                    "tooltip": "16 factors, one per cross-attention layer 0-15 from the first down block to the "
                               "last up block (content layers are 4-8), or a preset: " + ", ".join(PRESETS) + ".",
                    **LAYER_MAP_OPTIONS}),
                "combine": (list(COMBINE_METHODS), {
                    "default": "average",
                    "tooltip": "Several references: average their tokens (16 tokens), concat them (16 per "
                               "reference, each kept), or per latent: reference i for latent i of the batch (as many "
                               "references as latents). For ratios, use DEADiff Mix."}),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "Where the reference acts (1) and where not (0); the image's aspect ratio."}),
                "content_tokens": ("DEADIFF_TOKENS", {
                    "tooltip": "A separate reference for the content layers; tokens then feeds the style layers only."}),
                "negative_tokens": ("DEADIFF_TOKENS", {
                    "tooltip": "A reference for the negative (CFG) pass, routed by the same mode and combine: the "
                               "image is steered away from it. Unconnected: DEADiff's zero tokens (the official "
                               "behaviour). Encode it with the same DEADiff model."}),
                "key_weight": ("FLOAT", {"default": 1.0, **WEIGHT,
                                         "tooltip": "Extra factor on the reference's keys, on top of weight: it "
                                                    "scales the reference's attention scores, so where attention "
                                                    "goes."}),
                "value_weight": ("FLOAT", {"default": 1.0, **WEIGHT,
                                           "tooltip": "Extra factor on the reference's values, on top of weight: "
                                                      "how much of the reference the attention brings in. Raise it "
                                                      "alone to push the style without changing where attention goes."}),
            },
        }

    def apply(self, model, deadiff, tokens, mode, weight, start_at, end_at, style_weight, content_weight, layer_weights,
              combine, mask=None, content_tokens=None, negative_tokens=None, key_weight=1.0, value_weight=1.0):
        try:
            weights = parse_layer_weights(layer_weights)
        except ValueError as e:
            raise node_error("DEADiff Apply Advanced", e) from e
        return _patched_model("DEADiff Apply Advanced", model, deadiff, tokens, start_at, end_at, content_tokens,
                              negative_tokens, mode=mode, weight=weight, style_weight=style_weight,
                              content_weight=content_weight, key_weight=key_weight, value_weight=value_weight,
                              layer_weights=weights, combine=combine, mask=mask)


NODE_CLASS_MAPPINGS = {"DEADiffApply": DEADiffApply, "DEADiffApplyAdvanced": DEADiffApplyAdvanced}
NODE_DISPLAY_NAME_MAPPINGS = {"DEADiffApply": "DEADiff Apply", "DEADiffApplyAdvanced": "DEADiff Apply (Advanced)"}
