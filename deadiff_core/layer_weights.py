"""Per-layer weights for the 16 cross-attention layers: a named preset or a free list of 16
numbers, written as text so a workflow carries it and the layer-map widget can edit it."""
import math

from .layers import CONTENT, SD15_LAYERS, STYLE

_COUNT = len(SD15_LAYERS)


def _preset(rule):
    return tuple(1.0 if rule(layer) else 0.0 for layer in SD15_LAYERS)


PRESETS = {
    "all": (1.0,) * _COUNT,
    "style layers only": _preset(lambda layer: layer.branch == STYLE),
    "content layers only": _preset(lambda layer: layer.branch == CONTENT),
    "down blocks only": _preset(lambda layer: layer.stage == "down"),
    "up blocks only": _preset(lambda layer: layer.stage == "up"),
    "fine layers only (64x64)": _preset(lambda layer: layer.resolution_at_512px == 64),
}


def format_weights(weights):
    return ", ".join(f"{w:g}" for w in weights)


def parse_layer_weights(text):
    """A preset name or 16 comma/space-separated numbers -> tuple of 16 floats >= 0."""
    text = (text or "").strip()
    if text.lower() in PRESETS:
        return PRESETS[text.lower()]
    parts = [p for p in text.replace(",", " ").split()]
    try:
        weights = tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(f"layer weights {text!r}: write {_COUNT} numbers separated by commas, or one of the presets "
                         f"{', '.join(PRESETS)}") from None
    if len(weights) != _COUNT:
        raise ValueError(f"layer weights need {_COUNT} numbers (one per cross-attention layer, down to up), got {len(weights)}")
    if not all(math.isfinite(w) and w >= 0 for w in weights):
        raise ValueError(f"layer weights must be finite and non-negative, got {format_weights(weights)}")
    return weights
