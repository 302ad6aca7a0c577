"""DEADiffEncode: reference images -> DEADIFF_TOKENS (style and content tokens per image)."""
import comfy.utils

from ..deadiff_core.images import FITS, check_reference_images
from .errors import node_error


class DEADiffEncode:
    SEARCH_ALIASES = ["deadiff", "style reference", "reference image", "encode reference", "image prompt",
                      "style encoder", "encode style"]
    DESCRIPTION = ("Reads reference images with CLIP ViT-L/14 and DEADiff's two Q-Formers: 16 style tokens and "
                   "16 content tokens per image. Each image of the batch becomes one reference.")
    CATEGORY = "DEADiff"
    RETURN_TYPES = ("DEADIFF_TOKENS",)
    OUTPUT_TOOLTIPS = ("Style and content tokens, one set per reference image: connect to DEADiff Apply, Mix or Save Tokens.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "deadiff": ("DEADIFF", {"tooltip": "From Load DEADiff Model."}),
                "image": ("IMAGE", {"tooltip": "The reference image(s); made square as `fit` says, then resized to "
                                               "224x224. Crop it yourself first if the style sits in one part."}),
            },
            "optional": {
                "clip_vision": ("CLIP_VISION", {
                    "tooltip": "CLIP ViT-L/14 (224 px) from Load CLIP Vision. Leave unconnected to use the vision "
                               "tower inside deadiff_v1.ckpt (or an adapter converted with --with-vision)."}),
                "fit": (list(FITS), {
                    "default": "squash",
                    "tooltip": "How a reference that is not square becomes CLIP's 224x224 square. squash: stretched, "
                               "like the official code (a wide or tall reference arrives distorted). crop: the "
                               "centred square only, the edges left out. pad: the whole image, centred between bars "
                               "of the grey CLIP reads as neutral."}),
            },
        }

    def encode(self, deadiff, image, clip_vision=None, fit="squash"):
        embedded_vision = clip_vision is None
        try:
            check_reference_images(image)
            if embedded_vision:
                clip_vision = deadiff.embedded_clip_vision
            if clip_vision is None:
                raise ValueError("this DEADiff file has no vision tower of its own (converted without --with-vision). "
                                 "Connect Load CLIP Vision with CLIP ViT-L/14 (e.g. clip_vision_l / "
                                 "CLIP-ViT-L-14.safetensors) to the clip_vision input.")
            bar = comfy.utils.ProgressBar(image.shape[0])  # the editor's progress bar, a step per reference
            tokens = deadiff.encode(image, clip_vision, progress=lambda done, total: bar.update_absolute(done, total),
                                    fit=fit)
        except ValueError as e:
            raise node_error("DEADiff Encode", e) from e
        return {"ui": {"deadiff_info": [_describe(tokens, embedded_vision)]}, "result": (tokens,)}


def _describe(tokens, embedded_vision):
    """What the node shows after a run: references, branches, tokens per reference."""
    count, per_reference, width = tokens[tokens.branches[0]].shape
    references = f"{count} reference{'s' if count != 1 else ''}"
    vision = "the file's own vision tower" if embedded_vision else "the connected CLIP vision"
    return (f"{references}: {' + '.join(tokens.branches)} tokens, {per_reference} per reference and branch "
            f"({width} wide), via {vision}")


NODE_CLASS_MAPPINGS = {"DEADiffEncode": DEADiffEncode}
NODE_DISPLAY_NAME_MAPPINGS = {"DEADiffEncode": "DEADiff Encode Reference"}
