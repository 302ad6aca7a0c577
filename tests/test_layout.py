"""The full-size configuration, built on `meta`, against the official layout of docs/DESIGN.md, Checkpoint,
written out here key by key; and the layer map against the table in docs/DESIGN.md, Layer map."""
import pytest
import torch

from deadiff_core.checkpoint import adapter_layout, official_module_keys
from deadiff_core.encoder import DEADiffEncoder
from deadiff_core.layers import SD15_LAYERS
from deadiff_core.projections import ImageProjections
from deadiff_core.qformer import QFormerConfig
from deadiff_core.synthetic import OfficialLayout, official_state_dict

pytestmark = pytest.mark.no_comfyui  # core code only: ./scripts/test.sh runs it on one runtime

# docs/DESIGN.md, Layer map: (ComfyUI patch key, LDM block, channels, branch) in transformer_index order
SPEC_LAYERS = [
    (("input", 1), "input_blocks.1.1", 320, "style"), (("input", 2), "input_blocks.2.1", 320, "style"),
    (("input", 4), "input_blocks.4.1", 640, "style"), (("input", 5), "input_blocks.5.1", 640, "style"),
    (("input", 7), "input_blocks.7.1", 1280, "content"), (("input", 8), "input_blocks.8.1", 1280, "content"),
    (("middle", 0), "middle_block.1", 1280, "content"),
    (("output", 3), "output_blocks.3.1", 1280, "content"), (("output", 4), "output_blocks.4.1", 1280, "content"),
    (("output", 5), "output_blocks.5.1", 1280, "style"),
    (("output", 6), "output_blocks.6.1", 640, "style"), (("output", 7), "output_blocks.7.1", 640, "style"),
    (("output", 8), "output_blocks.8.1", 640, "style"),
    (("output", 9), "output_blocks.9.1", 320, "style"), (("output", 10), "output_blocks.10.1", 320, "style"),
    (("output", 11), "output_blocks.11.1", 320, "style"),
]
# docs/DESIGN.md, Layer map: the side of each layer's token grid at 512 px (the latent there is 64x64)
SPEC_RESOLUTIONS = [64, 64, 32, 32, 16, 16, 8, 16, 16, 16, 32, 32, 32, 64, 64, 64]


def spec_adapter_keys(branch):
    """Official key -> shape of what the adapter needs from one branch (docs/DESIGN.md, Checkpoint)."""
    keys = {f"{branch}_blip.ln_vision.weight": (1024,), f"{branch}_blip.ln_vision.bias": (1024,),
            f"{branch}_blip.query_tokens": (1, 16, 768)}
    bert = f"{branch}_blip.Qformer.bert."
    keys.update({bert + "embeddings.word_embeddings.weight": (30523, 768),
                 bert + "embeddings.position_embeddings.weight": (512, 768),
                 bert + "embeddings.LayerNorm.weight": (768,), bert + "embeddings.LayerNorm.bias": (768,),
                 bert + "embeddings.position_ids": (1, 512)})
    for i in range(12):
        p = f"{bert}encoder.layer.{i}."
        linears = {"attention.self.query": (768, 768), "attention.self.key": (768, 768),
                   "attention.self.value": (768, 768), "attention.output.dense": (768, 768),
                   "crossattention.self.query": (768, 768), "crossattention.self.key": (768, 1024),
                   "crossattention.self.value": (768, 1024), "crossattention.output.dense": (768, 768),
                   "intermediate.dense": (3072, 768), "intermediate_query.dense": (3072, 768),
                   "output.dense": (768, 3072), "output_query.dense": (768, 3072)}
        for name, shape in linears.items():
            keys[p + name + ".weight"] = shape
            keys[p + name + ".bias"] = (shape[0],)
        for norm in ("attention.output.LayerNorm", "crossattention.output.LayerNorm", "output.LayerNorm", "output_query.LayerNorm"):
            keys[p + norm + ".weight"] = keys[p + norm + ".bias"] = (768,)
    proj = f"{branch}_proj_layer."
    keys.update({proj + "LayerNorm.weight": (768,), proj + "LayerNorm.bias": (768,),
                 proj + "dense1.weight": (3072, 768), proj + "dense1.bias": (3072,),
                 proj + "dense2.weight": (768, 3072), proj + "dense2.bias": (768,)})
    return keys


def spec_image_projection_keys():
    return {f"model.diffusion_model.{block}.transformer_blocks.0.attn2.i_to_{kv}.weight": (channels, 768)
            for _, block, channels, _ in SPEC_LAYERS for kv in "kv"}


def spec_vision_keys(branch):
    p = f"{branch}_blip.visual_encoder."
    keys = {p + "conv1.weight": (1024, 3, 14, 14), p + "class_embedding": (1024,),
            p + "positional_embedding": (257, 1024), p + "ln_pre.weight": (1024,), p + "ln_pre.bias": (1024,)}
    for i in range(23):
        b = f"{p}transformer.resblocks.{i}."
        keys.update({b + "attn.in_proj_weight": (3072, 1024), b + "attn.in_proj_bias": (3072,),
                     b + "attn.out_proj.weight": (1024, 1024), b + "attn.out_proj.bias": (1024,),
                     b + "ln_1.weight": (1024,), b + "ln_1.bias": (1024,), b + "ln_2.weight": (1024,), b + "ln_2.bias": (1024,),
                     b + "mlp.c_fc.weight": (4096, 1024), b + "mlp.c_fc.bias": (4096,),
                     b + "mlp.c_proj.weight": (1024, 4096), b + "mlp.c_proj.bias": (1024,)})
    return keys


def shapes(state_dict):
    return {k: tuple(v.shape) for k, v in state_dict.items()}


@pytest.mark.fast
def test_layer_map_is_the_official_one():
    assert [(l.patch_key, l.ldm_block, l.channels, l.branch) for l in SD15_LAYERS] == SPEC_LAYERS
    assert [l.index for l in SD15_LAYERS if l.branch == "content"] == [4, 5, 6, 7, 8]


@pytest.mark.fast
def test_each_layer_names_its_module_its_keys_its_stage_and_its_grid():
    stages = {"input": "down", "middle": "middle", "output": "up"}
    for layer, (patch_key, block, _, _), resolution in zip(SD15_LAYERS, SPEC_LAYERS, SPEC_RESOLUTIONS, strict=True):
        assert layer.attn2_path == f"{block}.transformer_blocks.0.attn2"
        assert layer.image_projection_keys == (f"model.diffusion_model.{block}.transformer_blocks.0.attn2.i_to_k.weight",
                                               f"model.diffusion_model.{block}.transformer_blocks.0.attn2.i_to_v.weight")
        assert layer.checkpoint_key("to_k.weight") == f"model.diffusion_model.{block}.transformer_blocks.0.attn2.to_k.weight"
        assert layer.stage == stages[patch_key[0]]
        assert layer.resolution_at_512px == resolution


def test_full_size_modules_have_the_official_keys_and_shapes():
    encoder = DEADiffEncoder(QFormerConfig(), 3072, device="meta")
    projections = ImageProjections({i: c for i, (_, _, c, _) in enumerate(SPEC_LAYERS)}, 768, device="meta")
    official = {}
    for branch in ("style", "content"):
        reverse = {new: old for old, new in official_module_keys(branch).items()}
        for key, tensor in encoder.state_dict().items():
            for new, old in reverse.items():
                if key.startswith(new):
                    official[old + key[len(new):]] = tuple(tensor.shape)
    for key, tensor in projections.state_dict().items():
        _, index, kv, _ = key.split(".")
        official[f"model.diffusion_model.{SPEC_LAYERS[int(index)][1]}.transformer_blocks.0.attn2.{kv}.weight"] = tuple(tensor.shape)
    expected = {**spec_adapter_keys("style"), **spec_adapter_keys("content"), **spec_image_projection_keys()}
    assert official == expected
    params = sum(t.numel() for t in projections.state_dict().values())
    assert round(params / 1e6, 1) == 19.2  # spec: the 32 i_to_k/v hold 19.2 M parameters


def test_synthetic_full_size_file_matches_the_spec_and_loads():
    sd = official_state_dict(OfficialLayout(), device="meta")
    got = shapes(sd)
    for branch in ("style", "content"):
        for key, shape in {**spec_adapter_keys(branch), **spec_vision_keys(branch)}.items():
            assert got[key] == shape, key
        assert sd[f"{branch}_blip.visual_encoder.conv1.weight"].dtype == torch.float16
        assert sd[f"{branch}_blip.visual_encoder.transformer.resblocks.0.attn.in_proj_weight"].dtype == torch.float32
    layout = adapter_layout(sd, "<full-size meta>", with_vision=False)
    assert layout.qformer == QFormerConfig()
    assert layout.proj_hidden == 3072
    assert layout.channels == {i: c for i, (_, _, c, _) in enumerate(SPEC_LAYERS)}
    assert set(layout.official_keys()) == {**spec_adapter_keys("style"), **spec_adapter_keys("content"), **spec_image_projection_keys()}.keys()
