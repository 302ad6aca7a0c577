"""Reference tokens, their files, mixing, per-layer weights and injection settings: the plain
PyTorch pieces the nodes are built on, each checked against a written-out expectation."""
import math

import pytest
import torch
from safetensors.torch import save_file

from deadiff_core.encoder import mix_tokens
from deadiff_core.images import check_reference_images
from deadiff_core.layer_weights import PRESETS, parse_layer_weights
from deadiff_core.token_io import load_tokens, save_tokens
from deadiff_core.tokens import ReferenceTokens

pytestmark = pytest.mark.fast


def random_tokens(n, seed=0, branches=("style", "content")):
    g = torch.Generator().manual_seed(seed)
    return ReferenceTokens(**{b: torch.randn(n, 16, 768, generator=g) for b in branches})


def test_token_file_round_trip_is_exact(tmp_path):
    tokens = random_tokens(3)
    save_tokens(tmp_path / "t.safetensors", tokens)
    loaded = load_tokens(tmp_path / "t.safetensors")
    assert torch.equal(loaded.style, tokens.style) and torch.equal(loaded.content, tokens.content)
    style_only = random_tokens(1, branches=("style",))
    save_tokens(tmp_path / "s.safetensors", style_only)
    assert load_tokens(tmp_path / "s.safetensors").branches == ("style",)


@pytest.mark.parametrize("contents,message", [
    (b"", "not a readable safetensors file"),
    (b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}", "not a readable safetensors file"),
    (None, "not a DEADiff tokens file"),
])
def test_bad_token_files_are_named_and_explained(tmp_path, contents, message):
    path = tmp_path / "bad.safetensors"
    if contents is None:
        save_file({"clip_l": torch.zeros(2, 768)}, str(path))
    else:
        path.write_bytes(contents)
    with pytest.raises(ValueError, match=message) as info:
        load_tokens(path)
    assert str(path) in str(info.value)


def test_mixing_is_the_normalised_ratio_weighted_sum():
    tokens = torch.randn(3, 16, 768, generator=torch.Generator().manual_seed(1))
    mixed = mix_tokens(tokens, [1.0, 2.0, 1.0])
    assert torch.allclose(mixed[0], 0.25 * tokens[0] + 0.5 * tokens[1] + 0.25 * tokens[2], atol=1e-6)
    with pytest.raises(ValueError, match="not all zero"):
        mix_tokens(tokens, [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="one ratio per reference"):
        mix_tokens(tokens, [1.0])


def test_combining_references():
    tokens = random_tokens(2)
    assert torch.allclose(tokens.combined("style", "average"), (tokens.style[0] + tokens.style[1]) / 2)
    assert torch.equal(tokens.combined("content", "concat"), torch.cat([tokens.content[0], tokens.content[1]]))
    with pytest.raises(ValueError, match="unknown combine method"):
        tokens.combined("style", "sum")
    with pytest.raises(ValueError, match="NaN"):
        ReferenceTokens(style=torch.full((1, 16, 768), math.nan))


def test_layer_weight_presets_and_lists():
    assert parse_layer_weights("all") == (1.0,) * 16
    content = parse_layer_weights("content layers only")
    assert [i for i, w in enumerate(content) if w] == [4, 5, 6, 7, 8]  # the official content_layer
    assert parse_layer_weights("fine layers only (64x64)") == (1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1)
    assert parse_layer_weights("0 1,2 3 " + "1 " * 12)[:4] == (0.0, 1.0, 2.0, 3.0)
    assert set(PRESETS) >= {"all", "style layers only", "content layers only"}
    for bad, message in (("1, 2", "need 16 numbers"), ("loud", "presets"), ("-1 " * 16, "non-negative"),
                         ("nan " * 16, "finite")):
        with pytest.raises(ValueError, match=message):
            parse_layer_weights(bad)


@pytest.mark.parametrize("settings,message", [
    ({"mode": "everything"}, "unknown mode"), ({"weight": -0.5}, "weight must be"), ({"style_weight": math.inf}, "finite"),
    ({"layer_weights": (1.0,) * 15}, "16 numbers"), ({"start_sigma": 1.0, "end_sigma": 2.0}, "end_at comes before"),
    ({"mask": torch.full((1, 8, 8), 2.0)}, "within 0..1"), ({"mask": torch.ones(8)}, "mask must be"),
])
def test_injection_settings_refuse_bad_numbers(comfy, settings, message):
    from deadiff_core.comfy_patch import InjectionSettings
    with pytest.raises(ValueError, match=message):
        InjectionSettings(**settings)


@pytest.mark.parametrize("image,message", [
    (torch.rand(1, 64, 64, 4), "RGBA"), (torch.rand(1, 1, 1, 3), "1x1 px"), (torch.rand(1, 64, 64, 3) * 257, "16-bit"),
    (torch.ones(1, 64, 64, 3), "pure white"), (torch.rand(0, 64, 64, 3), "empty"), (torch.rand(64, 64, 3), "IMAGE batch"),
])
def test_reference_image_checks(image, message):
    with pytest.raises(ValueError, match=message):
        check_reference_images(image)
    check_reference_images(torch.rand(2, 48, 80, 3))
