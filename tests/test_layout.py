"""The full-size configuration, built on `meta`, against the official layout of docs/DESIGN.md, Checkpoint,
written out key by key in support/layout_spec.py; and the layer map against the table in docs/DESIGN.md, Layer map."""
import pytest
import torch

from deadiff_core.checkpoint import adapter_layout, official_module_keys
from deadiff_core.encoder import DEADiffEncoder
from deadiff_core.layers import SD15_LAYERS
from deadiff_core.projections import ImageProjections
from deadiff_core.qformer import QFormerConfig
from deadiff_core.synthetic import OfficialLayout, official_state_dict
from support.layout_spec import SPEC_LAYERS, SPEC_RESOLUTIONS, spec_adapter_keys, spec_image_projection_keys, spec_vision_keys

pytestmark = pytest.mark.no_comfyui  # core code only: ./scripts/test.sh runs it on one runtime


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
