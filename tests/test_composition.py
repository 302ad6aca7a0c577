"""DEADiff in the same graph as other MODEL patches, through the real server: ComfyUI's own patches on the same
UNet, and the real ComfyUI_IPAdapter_plus (unmodified, from ../shared/peers) in either order."""
import os

import numpy as np
import pytest

from scripts.comfy_server import PACK_FOLDER_NAME, ComfyServer
from scripts.graphs import REFERENCE, graph, run_ok, saved_image, write_reference
from scripts.images import save_reference
from support.paths import COMFYUI_PATH, REPO_ROOT
from support.peers import CLIP_VISION_H_FILE, IPADAPTER_FILE, clip_vision_h_file, extract_ipadapter, ipadapter_sd15_file

# ComfyUI's patches that touch the UNet DEADiff patches: attn2 weights, attn1 (PAG, ToMe), the output blocks
COMFY_PATCHES = {
    "UNetCrossAttentionMultiply": {"q": 1.1, "k": 0.9, "v": 1.3, "out": 1.0},
    "PerturbedAttentionGuidance": {"scale": 3.0},
    "FreeU_V2": {"b1": 1.3, "b2": 1.4, "s1": 0.9, "s2": 0.2},
    "TomePatchModel": {"ratio": 0.5},
}


def mean_difference(a, b):
    return np.abs(a - b).mean()


def chained(node_id, class_type, inputs, before_deadiff, with_deadiff=True):
    """graph() with a MODEL node `class_type` between Load Checkpoint and DEADiff Apply, or after DEADiff Apply."""
    prompt = graph(with_deadiff=with_deadiff)
    prompt[node_id] = {"class_type": class_type, "inputs": dict(inputs, model=["1", 0])}
    if not with_deadiff:
        prompt["9"]["inputs"]["model"] = [node_id, 0]
    elif before_deadiff:
        prompt["8"]["inputs"]["model"] = [node_id, 0]
    else:
        prompt[node_id]["inputs"]["model"] = ["8", 0]
        prompt["9"]["inputs"]["model"] = [node_id, 0]
    return prompt


@pytest.fixture(scope="module")
def plain_and_deadiff(server):
    return saved_image(server, run_ok(server, graph(with_deadiff=False)))[1], saved_image(server, run_ok(server, graph()))[1]


@pytest.mark.parametrize("patch", COMFY_PATCHES)
def test_comfyui_patches_on_the_same_unet_compose_with_deadiff_in_either_order(server, plain_and_deadiff, patch):
    plain, deadiff_only = plain_and_deadiff
    _, patch_only = saved_image(server, run_ok(server, chained("20", patch, COMFY_PATCHES[patch], True, with_deadiff=False)))
    _, before = saved_image(server, run_ok(server, chained("20", patch, COMFY_PATCHES[patch], before_deadiff=True)))
    _, after = saved_image(server, run_ok(server, chained("20", patch, COMFY_PATCHES[patch], before_deadiff=False)))
    assert mean_difference(patch_only, plain) > 0.2, f"{patch} did not change the image"
    assert mean_difference(before, patch_only) > 2, f"DEADiff did not change the image under {patch}"
    assert mean_difference(before, deadiff_only) > 0.2, f"{patch} did not act beside DEADiff"
    assert np.array_equal(before, after)  # two executions of the same computation: deterministic, order-free


@pytest.fixture(scope="module")
def ipadapter_server(comfy, server, tmp_path_factory):
    """A second real server with DEADiff and IPAdapter_plus in custom_nodes, reading the session's model files."""
    base = str(tmp_path_factory.mktemp("comfyui_with_ipadapter"))
    custom_nodes = os.path.join(base, "custom_nodes")
    os.makedirs(custom_nodes)
    if extract_ipadapter(custom_nodes) is None:
        pytest.skip("ComfyUI_IPAdapter_plus's source is not beside this clone (../shared/peers; developers and CI have it)")
    os.symlink(REPO_ROOT, os.path.join(custom_nodes, PACK_FOLDER_NAME))
    for folder in ("models", "input", "models/ipadapter", "models/clip_vision"):
        os.makedirs(os.path.join(base, folder))
    for folder in ("checkpoints", "deadiff"):
        os.symlink(os.path.join(server.base_dir, "models", folder), os.path.join(base, "models", folder))
    write_reference(os.path.join(base, "input", REFERENCE))  # a copy: ComfyUI 0.33 refuses links out of input/
    save_reference(os.path.join(base, "input", "ipadapter_reference.jpeg"), "style_03")
    ipadapter_sd15_file(os.path.join(base, "models", "ipadapter", IPADAPTER_FILE), seed=51)
    clip_vision_h_file(os.path.join(base, "models", "clip_vision", CLIP_VISION_H_FILE), seed=52)
    server.free()  # the session server's models out of memory while this one runs
    with_ipadapter = ComfyServer(COMFYUI_PATH, None, base)
    yield with_ipadapter
    with_ipadapter.stop()


def with_ipadapter(ipadapter_first=None):
    """graph() with IPAdapter Advanced (a second reference) before or after DEADiff Apply; None: without DEADiff."""
    prompt = chained("33", "IPAdapterAdvanced", {
        "ipadapter": ["30", 0], "image": ["32", 0], "clip_vision": ["31", 0], "weight": 1.0, "weight_type": "linear",
        "combine_embeds": "concat", "start_at": 0.0, "end_at": 1.0, "embeds_scaling": "V only"},
        before_deadiff=bool(ipadapter_first), with_deadiff=ipadapter_first is not None)
    prompt["30"] = {"class_type": "IPAdapterModelLoader", "inputs": {"ipadapter_file": IPADAPTER_FILE}}
    prompt["31"] = {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": CLIP_VISION_H_FILE}}
    prompt["32"] = {"class_type": "LoadImage", "inputs": {"image": "ipadapter_reference.jpeg"}}
    return prompt


def test_ipadapter_composes_with_deadiff_in_either_order(ipadapter_server):
    server = ipadapter_server
    assert "IPAdapterAdvanced" in server.get("/object_info"), server.log()[-3000:]
    first_name, deadiff_only = saved_image(server, run_ok(server, graph()))
    _, deadiff_first = saved_image(server, run_ok(server, with_ipadapter(ipadapter_first=False)))
    # ComfyUI hands IPAdapter the MODEL it cached for DEADiff Apply, and this prompt samples that MODEL again
    again_name, deadiff_again = saved_image(server, run_ok(server, graph()))
    _, ipadapter_only = saved_image(server, run_ok(server, with_ipadapter(None)))
    _, ipadapter_first = saved_image(server, run_ok(server, with_ipadapter(ipadapter_first=True)))
    assert again_name != first_name and np.array_equal(deadiff_again, deadiff_only), \
        "IPAdapter changed the MODEL DEADiff Apply gave it"
    for both in (ipadapter_first, deadiff_first):
        assert mean_difference(both, deadiff_only) > 2 and mean_difference(both, ipadapter_only) > 2
    # either order adds IPAdapter's attention term to DEADiff's joined attention: the same computation
    assert np.array_equal(ipadapter_first, deadiff_first)
