"""DEADiff through a real ComfyUI server: the graph a user builds, run on random-weight files at
their real architectures (SD1.5 checkpoint; DEADiff with a full ViT-L and a one-layer Q-Former)."""
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import REFERENCE_IMAGES
from deadiff_core.synthetic import OfficialLayout, official_state_dict, save_official_checkpoint
from sd15 import sd15_checkpoint

# the real ViT-L/14 and token width; a one-layer Q-Former keeps the file at about 1.4 GB
E2E_LAYOUT = OfficialLayout(qformer_layers=1, intermediate=256, vocab=4200, positions=16, proj_hidden=256)
CHECKPOINT, DEADIFF, REFERENCE = "sd15_random.safetensors", "deadiff_random.ckpt", "deadiff_style_01.jpeg"
NODES = {"DEADiffLoader": ["DEADIFF"], "DEADiffEncode": ["DEADIFF_TOKENS"], "DEADiffApply": ["MODEL"],
         "DEADiffApplyAdvanced": ["MODEL"], "DEADiffMix": ["DEADIFF_TOKENS"], "DEADiffSaveTokens": [],
         "DEADiffLoadTokens": ["DEADIFF_TOKENS"]}


@pytest.fixture(scope="session")
def server(comfy, comfy_server):
    """The session's server with a random SD1.5 checkpoint, a random DEADiff file and a reference image."""
    path = comfy_server.model_path("checkpoints", CHECKPOINT)
    if not shutil.os.path.exists(path):
        sd15_checkpoint(comfy, path, seed=21)
        save_official_checkpoint(comfy_server.model_path("deadiff", DEADIFF),
                                 official_state_dict(E2E_LAYOUT, seed=22, with_other_parts=False))
        shutil.copy(f"{REFERENCE_IMAGES}/style_01.jpeg", comfy_server.input_path(REFERENCE))
    return comfy_server


def graph(with_deadiff=True, seed=5, apply_node="DEADiffApply", **apply_inputs):
    """Load Checkpoint -> (DEADiff Load/Encode/Apply) -> KSampler 2 steps at 128 px -> VAE Decode -> Save."""
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a monkey playing with a banana"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "lowres, blurry"}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 1}},
        "5": {"class_type": "DEADiffLoader", "inputs": {"deadiff_name": DEADIFF}},
        "6": {"class_type": "LoadImage", "inputs": {"image": REFERENCE}},
        "7": {"class_type": "DEADiffEncode", "inputs": {"deadiff": ["5", 0], "image": ["6", 0]}},
        "8": {"class_type": apply_node, "inputs": {"model": ["1", 0], "deadiff": ["5", 0], "tokens": ["7", 0],
                                                   "mode": "style", "weight": 1.0, "start_at": 0.0, "end_at": 1.0,
                                                   **apply_inputs}},
        "9": {"class_type": "KSampler", "inputs": {"model": ["8", 0] if with_deadiff else ["1", 0], "seed": seed,
                                                   "steps": 2, "cfg": 8.0, "sampler_name": "ddim",
                                                   "scheduler": "ddim_uniform", "positive": ["2", 0],
                                                   "negative": ["3", 0], "latent_image": ["4", 0], "denoise": 1.0}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["1", 2]}},
        "11": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "e2e"}},
    }
    if not with_deadiff:
        for node in ("5", "6", "7", "8"):
            del prompt[node]
    return prompt


def saved_image(server, entry):
    (item,) = entry["outputs"]["11"]["images"]
    return item["filename"], np.asarray(Image.open(server.output_path(item)), dtype=np.int16)


def run_ok(server, prompt):
    entry, error = server.run(prompt)
    assert error is None, f"{error}\n{server.log()[-3000:]}"
    return entry


def test_object_info_lists_every_node_with_its_types(server):
    info = server.get("/object_info")
    for name, outputs in NODES.items():
        assert info[name]["category"] == "DEADiff" and info[name]["output"] == outputs, name
        assert info[name]["description"], name
        inputs = {**info[name]["input"]["required"], **info[name]["input"].get("optional", {})}
        assert all(spec[1].get("tooltip") for spec in inputs.values()), name
    apply = info["DEADiffApply"]["input"]["required"]
    assert [apply[k][0] for k in ("model", "deadiff", "tokens")] == ["MODEL", "DEADIFF", "DEADIFF_TOKENS"]
    assert apply["mode"][0] == ["style", "content", "style and content"] and apply["weight"][1]["default"] == 1.0
    advanced = info["DEADiffApplyAdvanced"]["input"]["optional"]
    assert advanced["mask"][0] == "MASK" and advanced["content_tokens"][0] == "DEADIFF_TOKENS"
    assert info["DEADiffEncode"]["input"]["optional"]["clip_vision"][0] == "CLIP_VISION"


def test_generation_with_deadiff_differs_from_without_and_repeats_exactly(server):
    first_name, first = saved_image(server, run_ok(server, graph()))
    plain_name, plain = saved_image(server, run_ok(server, graph(with_deadiff=False)))
    assert first.shape == plain.shape == (128, 128, 3)
    assert np.abs(first - plain).mean() > 2, "DEADiff did not change the image"
    server.free()  # drop ComfyUI's cache: the re-run executes every node again
    again_name, again = saved_image(server, run_ok(server, graph()))
    assert again_name != first_name  # a new file, so SaveImage ran again
    assert np.array_equal(again, first)


def test_advanced_apply_with_mask_and_separate_content_reference(server):
    prompt = graph(apply_node="DEADiffApplyAdvanced", mode="style and content", style_weight=1.0, content_weight=0.5,
                   layer_weights="style layers only", combine="concat", mask=["13", 0], content_tokens=["7", 0])
    prompt["13"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 128, "height": 128}}
    _, image = saved_image(server, run_ok(server, prompt))
    assert image.std() > 0


def test_tokens_saved_once_load_again(server):
    prompt = {key: node for key, node in graph().items() if key in ("5", "6", "7")}
    prompt["20"] = {"class_type": "DEADiffSaveTokens", "inputs": {"tokens": ["7", 0], "filename_prefix": "deadiff/ref"}}
    (saved,) = run_ok(server, prompt)["outputs"]["20"]["deadiff_tokens"]
    assert saved["load_as"] in server.get("/object_info/DEADiffLoadTokens")["DEADiffLoadTokens"]["input"]["required"]["tokens_file"][0]
    reuse = graph()
    reuse["7"] = {"class_type": "DEADiffLoadTokens", "inputs": {"tokens_file": saved["load_as"]}}
    _, image = saved_image(server, run_ok(server, reuse))
    _, encoded = saved_image(server, run_ok(server, graph()))
    assert np.array_equal(image, encoded)


def test_headless_workflow_runner(server, tmp_path):
    import json
    import subprocess
    import sys

    from conftest import REPO_ROOT

    workflow = tmp_path / "workflow_api.json"
    workflow.write_text(json.dumps(graph()))
    command = [sys.executable, "scripts/run_workflow.py", str(workflow), "--url", server.url, "--set", "9.seed=77"]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("11 images: output/") and done.stdout.strip().endswith(".png")
    broken = dict(graph(), **{"5": {"class_type": "DEADiffLoader", "inputs": {"deadiff_name": "missing.ckpt"}}})
    workflow.write_text(json.dumps(broken))
    failed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert failed.returncode == 1 and "DEADiffLoader" in failed.stderr and "missing.ckpt" in failed.stderr
