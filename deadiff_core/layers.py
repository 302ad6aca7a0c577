"""The SD1.5 cross-attention layer map: the one place that knows which layer is which.

Everything else (checkpoint loading, injection, training, the UI) reads this table.
Indices follow ComfyUI's `transformer_index` order, i.e. execution order through the UNet.
"""
from dataclasses import dataclass

STYLE = "style"
CONTENT = "content"
BRANCHES = (STYLE, CONTENT)
# which branches' tokens an Apply routes to their layers, by the name its `mode` takes
MODES = {"style": (STYLE,), "content": (CONTENT,), "style and content": (STYLE, CONTENT)}
STAGES = {"input": "down", "middle": "middle", "output": "up"}


@dataclass(frozen=True)
class CrossAttentionLayer:
    index: int
    ldm_block: str          # LDM / ComfyUI state-dict block, e.g. "input_blocks.1.1"
    patch_key: tuple        # ComfyUI attn2 replace-patch key, e.g. ("input", 1)
    channels: int           # query width of the layer at SD1.5 scale
    downscale: int          # latent downscale factor (8 at 512px -> 64x64 at factor 1)
    branch: str             # which DEADiff branch feeds it

    @property
    def attn2_path(self):
        """The layer's cross-attention module inside the UNet (ComfyUI's diffusion_model)."""
        return f"{self.ldm_block}.transformer_blocks.0.attn2"

    def checkpoint_key(self, name):
        """Official (LDM) checkpoint key of one of the layer's attn2 weights, e.g. "i_to_k.weight"."""
        return f"model.diffusion_model.{self.attn2_path}.{name}"

    @property
    def image_projection_keys(self):
        """Official checkpoint keys of this layer's i_to_k / i_to_v weights."""
        return self.checkpoint_key("i_to_k.weight"), self.checkpoint_key("i_to_v.weight")

    @property
    def stage(self):
        return STAGES[self.patch_key[0]]

    @property
    def resolution_at_512px(self):
        """Side of the layer's token grid for a 512x512 image (a 64x64 latent)."""
        return 64 // self.downscale


def _layer(index, ldm_block, patch_key, channels, downscale, branch):
    return CrossAttentionLayer(index, ldm_block, patch_key, channels, downscale, branch)


# Official DEADiff: content_layer = [4, 5, 6, 7, 8]; every other layer is a style layer
# (output_blocks.5 is a 16x16 layer but still a style layer in the released code).
SD15_LAYERS = (
    _layer(0, "input_blocks.1.1", ("input", 1), 320, 1, STYLE),
    _layer(1, "input_blocks.2.1", ("input", 2), 320, 1, STYLE),
    _layer(2, "input_blocks.4.1", ("input", 4), 640, 2, STYLE),
    _layer(3, "input_blocks.5.1", ("input", 5), 640, 2, STYLE),
    _layer(4, "input_blocks.7.1", ("input", 7), 1280, 4, CONTENT),
    _layer(5, "input_blocks.8.1", ("input", 8), 1280, 4, CONTENT),
    _layer(6, "middle_block.1", ("middle", 0), 1280, 8, CONTENT),
    _layer(7, "output_blocks.3.1", ("output", 3), 1280, 4, CONTENT),
    _layer(8, "output_blocks.4.1", ("output", 4), 1280, 4, CONTENT),
    _layer(9, "output_blocks.5.1", ("output", 5), 1280, 4, STYLE),
    _layer(10, "output_blocks.6.1", ("output", 6), 640, 2, STYLE),
    _layer(11, "output_blocks.7.1", ("output", 7), 640, 2, STYLE),
    _layer(12, "output_blocks.8.1", ("output", 8), 640, 2, STYLE),
    _layer(13, "output_blocks.9.1", ("output", 9), 320, 1, STYLE),
    _layer(14, "output_blocks.10.1", ("output", 10), 320, 1, STYLE),
    _layer(15, "output_blocks.11.1", ("output", 11), 320, 1, STYLE),
)


def layers_of(branch):
    return tuple(layer for layer in SD15_LAYERS if layer.branch == branch)
