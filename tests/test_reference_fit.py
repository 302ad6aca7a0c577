"""DEADiff Encode's `fit`: how a reference that is not square becomes CLIP's square. `crop` and `pad` give the tokens
of the image cropped or letterboxed by hand (written out here, with Pillow and numpy) and then encoded as today;
`squash` (the default) is today's encode, bit for bit; and the server runs each, refusing a fit it does not know."""
import numpy as np
import pytest
import torch

from deadiff_core.images import fit_to_square
from deadiff_core.synthetic import VIT_L_TINY, official_state_dict
from scripts.graphs import graph, run_ok, saved_image
from scripts.images import reference_image

# CLIP's normalisation mean and std, written out: a letterbox of the mean colour is what CLIP reads as neutral
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
# a 3:2 landscape and a 2:3 portrait (scripts/images.py): smooth, but different across the whole frame
NOT_SQUARE = {"3:2": ("content_01", (300, 200)), "2:3": ("style_01", (200, 300))}


def as_image(pixels):
    """uint8 or 0..1 float (height, width, 3) -> ComfyUI's IMAGE (1, height, width, 3)."""
    pixels = np.asarray(pixels)
    pixels = pixels.astype(np.float32) / 255 if pixels.dtype == np.uint8 else pixels.astype(np.float32)
    return torch.from_numpy(pixels).unsqueeze(0)


def hand_cropped(picture):
    """The centred square of a PIL image, cut by Pillow."""
    side = min(picture.size)
    left, top = (picture.width - side) // 2, (picture.height - side) // 2
    return as_image(picture.crop((left, top, left + side, top + side)))


def hand_letterboxed(picture):
    """The PIL image centred on a square of CLIP's mean colour, built in numpy."""
    side = max(picture.size)
    square = np.empty((side, side, 3), np.float32)
    square[:] = MEAN
    top, left = (side - picture.height) // 2, (side - picture.width) // 2
    square[top:top + picture.height, left:left + picture.width] = np.asarray(picture, np.float32) / 255
    return as_image(square)


@pytest.fixture(scope="module")
def official():
    """The smallest DEADiff with a ViT-L of its own (conftest's `deadiff` fixture loads it into ComfyUI)."""
    return official_state_dict(VIT_L_TINY, seed=15, scale=0.05, with_other_parts=False)


def encode(deadiff, image, **fit):
    return deadiff.encode(image, deadiff.embedded_clip_vision, **fit)


def assert_same_tokens(a, b):
    assert a.branches == b.branches == ("style", "content")
    for branch in a.branches:
        assert torch.equal(a[branch], b[branch]), branch


def relative_change(a, b):
    return max(((a[branch] - b[branch]).abs().max() / b[branch].abs().max()).item() for branch in b.branches)


@pytest.mark.parametrize("shape", NOT_SQUARE)
def test_crop_and_pad_are_the_hand_fitted_image_encoded_and_squash_is_today_s_encode(comfy, deadiff, shape):
    from deadiff_core.comfy_vision import vision_hidden_states

    picture = reference_image(*NOT_SQUARE[shape])
    image = as_image(picture)
    tokens = {fit: encode(deadiff, image, fit=fit) for fit in ("crop", "pad")}
    tokens["squash"] = encode(deadiff, image)  # the default

    assert_same_tokens(tokens["crop"], encode(deadiff, hand_cropped(picture)))
    assert_same_tokens(tokens["pad"], encode(deadiff, hand_letterboxed(picture)))
    with torch.no_grad():  # the encode as it was before `fit`: the whole image into the vision path
        today = deadiff.adapter.encoder(vision_hidden_states(deadiff.embedded_clip_vision, image).float())
    assert_same_tokens(tokens["squash"], type(tokens["squash"])(**today))
    # each fit reads another picture: changes far above float rounding
    assert relative_change(tokens["crop"], tokens["squash"]) > 1e-3
    assert relative_change(tokens["pad"], tokens["squash"]) > 1e-3
    assert relative_change(tokens["pad"], tokens["crop"]) > 1e-3


def test_a_square_reference_gives_the_same_tokens_with_every_fit(comfy, deadiff):
    image = as_image(reference_image("style_03", (224, 224)))
    squash = encode(deadiff, image, fit="squash")
    for fit in ("crop", "pad"):
        assert_same_tokens(encode(deadiff, image, fit=fit), squash)


@pytest.mark.fast
def test_the_letterbox_reaches_clip_as_zero_and_the_picture_stays_centred(comfy):
    image = as_image(reference_image("style_01", (200, 300)))
    padded = fit_to_square(image, "pad")
    assert padded.shape == (1, 300, 300, 3) and torch.equal(padded[:, :, 50:250], image)
    pixels = comfy.clip_vision.clip_preprocess(padded, crop=False)  # [1, 3, 224, 224], normalised
    bars = torch.cat([pixels[..., :30], pixels[..., -30:]], dim=-1)  # 50 of 300 px -> 37 of 224 on each side
    # zero up to ComfyUI's rounding of the mean to an 8-bit level (123, 117, 104 of 255)
    level = torch.tensor([123, 117, 104]) / 255
    assert torch.allclose(bars, ((level - torch.tensor(MEAN)) / torch.tensor(STD)).view(1, 3, 1, 1).expand_as(bars))
    assert bars.abs().max() < 0.004
    odd = torch.rand(2, 33, 40, 3)  # uneven margins: the extra row goes below, the extra column right
    assert torch.equal(fit_to_square(odd, "crop"), odd[:, :, 3:36])
    assert torch.equal(fit_to_square(odd, "pad")[:, 3:36], odd)
    with pytest.raises(ValueError, match=r"fit must be one of squash, crop, pad; got 'stretch'"):
        fit_to_square(image, "stretch")


def test_the_node_names_a_fit_it_does_not_offer(comfy, deadiff):
    """ComfyUI checks a typed-in choice (below), not a value from a link such as another pack's "any" output."""
    from scripts.build_locales import load_pack
    from support.paths import COMFYUI_PATH

    node = load_pack(COMFYUI_PATH)[0]["DEADiffEncode"]()
    with pytest.raises(ValueError, match=r"^DEADiff Encode: fit must be one of squash, crop, pad; got 'stretch'$"):
        node.encode(deadiff, as_image(reference_image("style_01", (64, 96))), fit="stretch")


# ---------------------------------------------------------------- through the server

def with_fit(fit):
    prompt = graph()
    prompt["7"]["inputs"]["fit"] = fit
    return prompt


def test_each_fit_runs_through_the_server_and_a_workflow_without_fit_squashes(server):
    """The graph's reference is the 2:3 portrait "style_01" (scripts/graphs.py)."""
    _, without_fit = saved_image(server, run_ok(server, graph()))  # a workflow saved before Encode had `fit`
    _, squash = saved_image(server, run_ok(server, with_fit("squash")))
    assert np.array_equal(without_fit, squash)
    _, crop = saved_image(server, run_ok(server, with_fit("crop")))
    _, pad = saved_image(server, run_ok(server, with_fit("pad")))
    # the same graph run again is bit-identical (test_end_to_end.py), so any change is the fit's; with these
    # random weights the reference moves the image less than a real DEADiff does (measured: 0.33 levels for crop)
    for fitted in (crop, pad):
        assert np.abs(fitted - squash).mean() > 0.1, "the fit did not change the image"
    assert np.abs(crop - pad).mean() > 0.1


def test_a_fit_the_node_does_not_offer_is_refused_before_running(server):
    """ComfyUI's validation of the choice, as the editor shows it on the node."""
    for value in ("stretch", "Crop", ""):
        entry, error = server.run(with_fit(value))
        assert entry is None, value  # refused when queued: nothing ran
        assert f"Value not in list: fit: '{value}' not in ['squash', 'crop', 'pad']" in error, error
