"""Bad input through a real ComfyUI server: a node error that says what is wrong and what to do,
and the server keeps serving the next good prompt."""
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from deadiff_core.synthetic import TINY, official_state_dict, save_official_checkpoint
from deadiff_core.token_io import save_tokens
from deadiff_core.tokens import ReferenceTokens
from scripts.graphs import advanced_graph, assert_refused_and_still_serving, graph, per_latent_graph, run_ok
from scripts.sd15 import sdxl_shaped_unet_file
from support import hostile_pickles


def with_image(name):
    prompt = graph()
    prompt["6"]["inputs"]["image"] = name
    return prompt


def write_png(server, name, array):
    Image.fromarray(array).save(server.input_path(name))
    return name


def non_deadiff_file(server):
    save_file({"image_proj.proj.weight": torch.zeros(3072, 1024), "ip_adapter.1.to_k_ip.weight": torch.zeros(320, 768)},
              server.model_path("deadiff", "ip-adapter_sd15.safetensors"))
    prompt = graph()
    prompt["5"]["inputs"]["deadiff_name"] = "ip-adapter_sd15.safetensors"
    return prompt


def sd15_checkpoint_as_deadiff(server):
    torch.save({"state_dict": {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3),
                               "first_stage_model.decoder.conv_out.weight": torch.zeros(3, 4, 3, 3)}},
               server.model_path("deadiff", "v1-5-pruned-emaonly.ckpt"))
    prompt = graph()
    prompt["5"]["inputs"]["deadiff_name"] = "v1-5-pruned-emaonly.ckpt"
    return prompt


def adapter_without_vision(server):
    save_official_checkpoint(server.model_path("deadiff", "no_vision.ckpt"), official_state_dict(TINY, with_vision=False))
    prompt = graph()
    prompt["5"]["inputs"]["deadiff_name"] = "no_vision.ckpt"
    return prompt


def sdxl_model(server):
    import comfy  # imported by the server fixture's comfy fixture

    path = server.model_path("diffusion_models", "sdxl_shaped.safetensors")
    sdxl_shaped_unet_file(comfy, path)
    prompt = graph()
    prompt["12"] = {"class_type": "UNETLoader", "inputs": {"unet_name": "sdxl_shaped.safetensors", "weight_dtype": "default"}}
    prompt["8"]["inputs"]["model"] = ["12", 0]
    return prompt


def rgba_image(server):
    prompt = graph()
    prompt["12"] = {"class_type": "JoinImageWithAlpha", "inputs": {"image": ["6", 0], "alpha": ["6", 1]}}
    prompt["7"]["inputs"]["image"] = ["12", 0]
    return prompt


def mask_of_another_shape(server):
    prompt = advanced_graph(mask=["12", 0])
    prompt["12"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 128, "height": 48}}
    return prompt


def tokens_from_elsewhere(server):
    save_file({"embeddings": torch.zeros(4, 768)}, server.input_path("someone_elses.safetensors"))
    prompt = graph()
    prompt["7"] = {"class_type": "DEADiffLoadTokens", "inputs": {"tokens_file": "someone_elses.safetensors"}}
    return prompt


def corrupt_tokens_file(server):
    with open(server.input_path("broken_tokens.safetensors"), "wb") as f:
        f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    prompt = graph()
    prompt["7"] = {"class_type": "DEADiffLoadTokens", "inputs": {"tokens_file": "broken_tokens.safetensors"}}
    return prompt


def one_branch_model_in_the_other_mode(server):
    prompt = graph()
    prompt["5"]["inputs"]["branches"] = "style only"
    prompt["8"]["inputs"]["mode"] = "content"
    return prompt


def tokens_file_as_a_model(server):
    save_tokens(server.model_path("deadiff", "saved_tokens.safetensors"), ReferenceTokens(style=torch.zeros(1, 16, 768)))
    prompt = graph()
    prompt["5"]["inputs"]["deadiff_name"] = "saved_tokens.safetensors"
    return prompt


def adapter_from_a_newer_pack(server):
    save_file({"style_proj_layer.dense1.weight": torch.zeros(4, 4)}, server.model_path("deadiff", "future.safetensors"),
              metadata={"format": "deadiff-adapter", "version": "2"})
    prompt = graph()
    prompt["5"]["inputs"]["deadiff_name"] = "future.safetensors"
    return prompt


def marker(server):
    return os.path.join(server.base_dir, "pwned")  # what the hostile files' payloads would create


def hostile_file(name, make):
    """A model file whose pickle carries code (tests/support/hostile_pickles.py), chosen in DEADiff Loader."""
    def build(server):
        make(Path(server.model_path("deadiff", name)), marker(server))
        prompt = graph()
        prompt["5"]["inputs"]["deadiff_name"] = name
        return prompt
    return build


def weight(value, name="weight"):
    def build(server):
        prompt = graph() if name == "weight" else advanced_graph()
        prompt["8"]["inputs"][name] = value
        return prompt
    return build


def negative_from_another_model(server):
    """A negative reference saved by DEADiff Save Tokens from a model whose Q-Formers make 8 tokens, not 16."""
    g = torch.Generator().manual_seed(23)
    save_tokens(server.input_path("eight_tokens.safetensors"),
                ReferenceTokens(style=torch.randn(1, 8, 768, generator=g), content=torch.randn(1, 8, 768, generator=g)))
    prompt = advanced_graph(negative_tokens=["32", 0])
    prompt["32"] = {"class_type": "DEADiffLoadTokens", "inputs": {"tokens_file": "eight_tokens.safetensors"}}
    return prompt


CASES = {
    "IP-Adapter file": (non_deadiff_file, ["DEADiff Loader", "ip-adapter_sd15.safetensors", "IP-Adapter",
                                           "IP-Adapter node pack"]),
    "SD1.5 checkpoint as DEADiff": (sd15_checkpoint_as_deadiff, ["DEADiff Loader", "diffusion-model checkpoint",
                                                                "Load it with Load Checkpoint"]),
    "no vision tower, no clip_vision": (adapter_without_vision, ["DEADiff Encode", "no vision tower", "Load CLIP Vision"]),
    "SDXL-shaped model": (sdxl_model, ["DEADiff Apply", "for SD1.x models", "SDXL-family", "2048", "Load an SD1.5-based checkpoint"]),
    "1x1 image": (lambda s: with_image(write_png(s, "dot.png", np.zeros((1, 1, 3), np.uint8))), ["1x1 px", "at least"]),
    "RGBA image": (rgba_image, ["RGBA", "4 channels"]),
    "mask of another shape": (mask_of_another_shape, ["mask is 128x48", "aspect ratio"]),
    "NaN weight": (weight(math.nan), ["DEADiff Apply", "weight must be a finite number"]),
    "NaN key_weight": (weight(math.nan, "key_weight"), ["DEADiff Apply Advanced", "key_weight must be a finite number"]),
    "NaN value_weight": (weight(math.nan, "value_weight"), ["DEADiff Apply Advanced",
                                                           "value_weight must be a finite number"]),
    "per latent, 2 references for 1 latent": (lambda s: per_latent_graph(latents=1),
                                               ["combine 'per latent'", "2 references for a batch of 1 latents",
                                                "give one reference per latent"]),
    "negative reference from another model": (negative_from_another_model, [
        "DEADiff Apply Advanced", "negative reference's style tokens are 8 per reference",
        "encode the negative reference with the same DEADiff model"]),
    "tokens file from elsewhere": (tokens_from_elsewhere, ["not a DEADiff tokens file", "DEADiff Save Tokens"]),
    "corrupt tokens file": (corrupt_tokens_file, ["broken_tokens.safetensors", "not a readable safetensors file"]),
    "style-only model in content mode": (one_branch_model_in_the_other_mode,
                                         ["DEADiff Apply", "needs the content branch", "branches to 'both'"]),
    "tokens file as a model": (tokens_file_as_a_model, ["DEADiff Loader", "is a DEADiff tokens file", "DEADiff Load Tokens"]),
    "adapter from a newer pack": (adapter_from_a_newer_pack, ["DEADiff Loader", "format version 2", "Update the pack"]),
    "os.system .ckpt": (hostile_file("evil_system.ckpt", hostile_pickles.os_system_zip),
                        ["DEADiff Loader", "evil_system.ckpt", f"pickle calls {os.system.__module__}.system", "NOT loaded"]),
    "legacy .pt calling eval": (hostile_file("evil_legacy.pt", hostile_pickles.eval_legacy),
                                ["DEADiff Loader", "evil_legacy.pt", "pickle calls builtins.eval", "NOT loaded"]),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gives_a_clear_node_error_and_the_server_keeps_serving(server, case):
    build, expected = CASES[case]
    assert_refused_and_still_serving(server, build(server), expected)
    assert not os.path.exists(marker(server))  # no file's code ran in the server


def test_the_server_log_keeps_where_the_core_refused(server):
    """A node error names the node for the editor; the log keeps the core's own traceback as its cause."""
    before = len(server.log())
    assert_refused_and_still_serving(server, one_branch_model_in_the_other_mode(server), ["needs the content branch"])
    log = server.log()[before:]
    assert "BranchNotLoaded: mode 'content' needs the content branch" in log, log[-3000:]
    assert "The above exception was the direct cause of the following exception" in log
    assert "comfy_patch.py" in log


def test_sixteen_bit_greyscale_png_is_refused_where_load_image_whitens_it(server):
    """Some ComfyUI versions' Load Image clip a 16-bit greyscale PNG (mode I;16) to almost pure white, which
    DEADiff Encode must refuse with advice; others decode it, and then it must encode. Which one this runtime
    does is read from what its Load Image returns (through Save Image, so to 8 bits), not from its version."""
    name = write_png(server, "grey16.png", np.linspace(0, 65535, 256 * 256).reshape(256, 256).astype(np.uint16))
    with Image.open(server.input_path(name)) as png:
        decoded = np.asarray(png, dtype=np.float64) / 65535  # Pillow's decode, none of ComfyUI's code
    assert decoded.min() == 0 and decoded.max() == 1 and np.unique(decoded).size > 256  # truly 16-bit
    entry = run_ok(server, {"1": {"class_type": "LoadImage", "inputs": {"image": name}},
                            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "grey16"}}})
    (item,) = entry["outputs"]["2"]["images"]
    loaded = np.asarray(Image.open(server.output_path(item)).convert("RGB"), dtype=np.int16)
    if (loaded == 255).all(-1).mean() >= 0.99:
        assert_refused_and_still_serving(server, with_image(name), ["pure white", "16-bit", "8-bit"])
    else:
        # Save Image writes floor(255 * value): allow one level for rounding in Load Image's own conversion
        assert np.abs(loaded - np.floor(255 * decoded)[..., None]).max() <= 1
        run_ok(server, with_image(name))


def test_negative_weight_is_refused_before_running(server):
    prompt = weight(-1.0)(server)
    entry, error = server.run(prompt)
    assert entry is None and "weight" in error and "smaller than min" in error


@pytest.mark.parametrize("node,inputs", [
    ("DEADiffLoadTokens", {"tokens_file": "../../outside.safetensors"}),
    ("DEADiffSaveTokens", {"filename_prefix": "../../outside/tokens"}),
])
def test_token_files_stay_inside_comfyuis_folders(server, node, inputs):
    import os

    save_file({"x": torch.zeros(1)}, os.path.join(server.base_dir, "outside.safetensors"))
    prompt = {key: value for key, value in graph().items() if key in ("5", "6", "7")}
    prompt["20"] = {"class_type": node, "inputs": {"tokens": ["7", 0], **inputs} if node == "DEADiffSaveTokens" else inputs}
    if node == "DEADiffLoadTokens":
        prompt["21"] = {"class_type": "DEADiffSaveTokens", "inputs": {"tokens": ["20", 0], "filename_prefix": "x"}}
    entry, error = server.run(prompt)
    assert error is not None and ("Value not in list" in error or "outside the output folder" in error), error
    assert not os.path.exists(os.path.join(os.path.dirname(server.base_dir), "outside"))


def deadiff_names(server):
    return server.get("/object_info/DEADiffLoader")["DEADiffLoader"]["input"]["required"]["deadiff_name"][0]


@pytest.mark.parametrize("links,expected", [
    ({"moved_away.ckpt": "{base}/nowhere/deadiff_v1.ckpt"},
     ["models/deadiff/moved_away.ckpt is a link to {base}/nowhere/deadiff_v1.ckpt, which does not exist", "ln -sfn"]),
    ({"looping.ckpt": "looping.ckpt"}, ["models/deadiff/looping.ckpt is a link that loops", "delete it"]),
    ({"ping.ckpt": "pong.ckpt", "pong.ckpt": "ping.ckpt"},
     ["models/deadiff/ping.ckpt is a link that loops", "/models/deadiff/pong.ckpt -> ", "delete it"]),
], ids=["dangling", "looping", "loop of two"])
def test_a_broken_link_in_models_deadiff_is_not_offered_and_is_explained(server, links, expected):
    """A link that leads nowhere is not in Load DEADiff Model's list; a workflow that still names it is told
    what the link is and what to do (instead of ComfyUI's bare "Value not in list")."""
    import os

    from scripts.graphs import DEADIFF

    for name, target in links.items():
        os.symlink(target.format(base=server.base_dir), server.model_path("deadiff", name))
    try:
        names = deadiff_names(server)
        assert DEADIFF in names and not set(links) & set(names), names
        prompt = graph()
        prompt["5"]["inputs"]["deadiff_name"] = next(iter(links))
        assert_refused_and_still_serving(server, prompt, [text.format(base=server.base_dir) for text in expected])
    finally:
        for name in links:
            os.remove(server.model_path("deadiff", name))


def test_a_name_models_deadiff_lacks_is_still_refused(server):
    prompt = graph()
    prompt["5"]["inputs"]["deadiff_name"] = "never_there.ckpt"
    assert_refused_and_still_serving(server, prompt, ["models/deadiff has no checkpoint 'never_there.ckpt'", "refresh"])


def token_files(server):
    import os

    return {os.path.join(root, name) for root, _, names in os.walk(server.base_dir) for name in names
            if name.endswith(".safetensors") and "models" not in root}


@pytest.mark.parametrize("prefix,expected", [
    ("deadiff/tok\x00ens", ["tok\\x00ens_NNNNN_.safetensors'", "it contains a NUL byte"]),
    ("../escaped/tokens", ["escaped/tokens_NNNNN_.safetensors'", "it is outside the output folder"]),
], ids=["NUL byte", "parent folder"])
def test_save_tokens_refuses_a_prefix_it_cannot_write(server, prefix, expected):
    import os

    before = token_files(server)
    prompt = graph()
    prompt["20"] = {"class_type": "DEADiffSaveTokens", "inputs": {"tokens": ["7", 0], "filename_prefix": prefix}}
    assert_refused_and_still_serving(server, prompt, ["DEADiff Save Tokens: cannot write '", *expected,
                                                      "; choose another filename_prefix"])
    assert token_files(server) == before and not os.path.exists(os.path.join(server.base_dir, "escaped"))
