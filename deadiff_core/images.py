"""Reference images before they reach the vision model: ComfyUI IMAGE tensors [N, H, W, 3] with values in
0..1, checked, and fitted to a square for CLIP's 224x224."""
import torch

from .token_bounds import MAX_REFERENCES

MIN_SIDE = 32  # CLIP resizes to 224 px; below this there is no style left to read
# How a reference that is not square becomes CLIP's square: squashed as the official code does, centre-cropped,
# or letterboxed.
FITS = ("squash", "crop", "pad")
# CLIP's normalisation mean: the colour that normalisation maps to zero, so letterbox bars read as "nothing"
# rather than as black or white (ComfyUI's preprocessing rounds them to the nearest 8-bit level, within 0.004).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)


def check_reference_images(image):
    """Raise ValueError saying what is wrong with an IMAGE batch, and what to do about it."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"expected an IMAGE batch [N, H, W, 3], got {shape}")
    count, height, width, channels = image.shape
    if count == 0:
        raise ValueError("the image batch is empty")
    if count > MAX_REFERENCES:
        raise ValueError(f"the batch holds {count} references; DEADiff takes at most {MAX_REFERENCES} at once "
                         "(every one becomes 16 tokens that Apply joins to each layer's keys)")
    if channels != 3:
        kind = {1: "greyscale", 4: "RGBA"}.get(channels, f"{channels}-channel")
        raise ValueError(f"the reference is a {kind} image ({channels} channels); DEADiff reads RGB. "
                         "Load it with Load Image (which returns RGB) or drop the extra channels first.")
    if min(height, width) < MIN_SIDE:
        raise ValueError(f"the reference image is {width}x{height} px; DEADiff needs at least {MIN_SIDE} px on each side "
                         "(a few hundred is best)")
    if not torch.isfinite(image).all():
        raise ValueError("the reference image contains NaN or infinite values")
    low, high = image.min().item(), image.max().item()
    if low < 0 or high > 1:
        raise ValueError(f"reference pixel values span {low:g}..{high:g}; ComfyUI images are 0..1. "
                         "A 16-bit image loaded without scaling looks like this: convert it to 8-bit.")
    for i, single in enumerate(image):
        white = (single == 1).float().mean().item()
        if white >= 0.99:
            raise ValueError(f"reference image {i + 1} is {white:.0%} pure white. ComfyUI's Load Image turns 16-bit "
                             "greyscale PNGs white: save the reference as an 8-bit PNG or JPEG.")


def fit_to_square(image, fit):
    """IMAGE [N, H, W, 3] -> what the vision model then squashes to 224x224: the image itself for "squash" (the
    official preprocessing) and for a square image, its centred square for "crop", or the image centred on a
    square of CLIP_MEAN for "pad"."""
    if fit not in FITS:
        raise ValueError(f"fit must be one of {', '.join(FITS)}; got {fit!r}")
    count, height, width, channels = image.shape
    if fit == "squash" or height == width:
        return image
    if fit == "crop":
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        return image[:, top:top + side, left:left + side]
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    square = image.new_tensor(CLIP_MEAN).expand(count, side, side, channels).clone()
    square[:, top:top + height, left:left + width] = image
    return square
