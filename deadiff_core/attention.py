"""DEADiff attention (docs/DESIGN.md, Injection): image keys/values joined to the text ones, one softmax.

    K = [to_k(text) ; w_k * i_to_k(img)]     V = [to_v(text) ; w_v * i_to_v(img)]

(w_k = w_v = the weight, unless keys and values are weighted apart.)

"No image" is never a skipped branch: it is 16 zero tokens, whose keys and values are exactly 0
(i_to_* have no bias) yet still add exp(0) per token to the softmax denominator. Inference and
training both build their keys and values here.
"""
import torch


def image_keys_values(projection, tokens, key_weight, value_weight):
    """[T, D] (one set for every row) or [B, T, D] (one per row) tokens -> weighted (keys, values)
    [.., T, C] through one layer's i_to_k / i_to_v."""
    return projection.i_to_k(tokens) * key_weight, projection.i_to_v(tokens) * value_weight


def rows_with_image(keys_values, use_image):
    """Image keys/values [T, C] (broadcast) or [B, T, C] (per row) -> [B, T, C], exact zeros in the
    rows where use_image [B] is False."""
    keep = use_image.to(keys_values[0].dtype)[:, None, None]
    return tuple(t * keep for t in keys_values)


def join_keys_values(k, v, k_image, v_image):
    """Text [B, L, C] and image [B, T, C] keys/values -> [B, L+T, C] each."""
    return torch.cat([k, k_image], dim=1), torch.cat([v, v_image], dim=1)


def blend_by_region(with_image, without_image, region):
    """Regional reference: [B, L, C] outputs blended by a [B or 1, L, 1] region in 0..1 (1 = reference).

    A region of ones returns with_image exactly, a region of zeros returns without_image exactly.
    """
    return with_image * region + without_image * (1 - region)

