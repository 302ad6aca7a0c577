"""DEADiffMix: several token sets with ratios -> one reference (the official style mixing)."""
import torch

from ..deadiff_core.encoder import mix_tokens
from ..deadiff_core.tokens import ReferenceTokens
from .errors import node_error

SLOTS = 4


class DEADiffMix:
    SEARCH_ALIASES = ["deadiff", "style mixing", "mix styles", "blend styles", "combine references", "style blend"]
    DESCRIPTION = ("Style mixing as in the official demo: the ratio-weighted sum of the references' tokens "
                   "(ratios are normalised to sum to 1). A token set holding several images counts as their average.")
    CATEGORY = "DEADiff"
    RETURN_TYPES = ("DEADIFF_TOKENS",)
    OUTPUT_TOOLTIPS = ("One mixed reference.",)
    FUNCTION = "mix"

    @classmethod
    def INPUT_TYPES(cls):
        def slot(i):
            return {f"tokens_{i}": ("DEADIFF_TOKENS", {"tooltip": f"Reference {i}, from DEADiff Encode or Load Tokens."}),
                    f"ratio_{i}": ("FLOAT", {"default": 0.5 if i <= 2 else 0.0, "min": 0.0, "max": 1.0, "step": 0.05,
                                             "tooltip": f"Share of reference {i} in the mix."})}
        required = slot(1) | slot(2)
        optional = {}
        for i in range(3, SLOTS + 1):
            optional |= slot(i)
        return {"required": required, "optional": optional}

    def mix(self, **inputs):
        pairs = [(inputs[f"tokens_{i}"], inputs.get(f"ratio_{i}", 0.0)) for i in range(1, SLOTS + 1)
                 if inputs.get(f"tokens_{i}") is not None]
        branches = [b for b in ("style", "content") if all(tokens[b] is not None for tokens, _ in pairs)]
        if not branches:
            raise ValueError("DEADiff Mix: the token sets share no branch (one is style-only, another content-only)")
        ratios = [ratio for _, ratio in pairs]
        try:
            mixed = {b: mix_tokens(torch.stack([tokens[b].mean(0) for tokens, _ in pairs]), ratios) for b in branches}
        except (ValueError, RuntimeError) as e:
            raise node_error("DEADiff Mix", e) from e
        return (ReferenceTokens(**mixed),)


NODE_CLASS_MAPPINGS = {"DEADiffMix": DEADiffMix}
NODE_DISPLAY_NAME_MAPPINGS = {"DEADiffMix": "DEADiff Mix References"}
