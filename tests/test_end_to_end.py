"""DEADiff through a real ComfyUI server: the graph a user builds, run on random-weight files at
their real architectures."""
import numpy as np
import pytest

from scripts.graphs import (NODES, SECOND_REFERENCE, advanced_graph, graph, negative_graph, per_latent_graph, run_ok,
                            saved_image, saved_images)


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
    assert advanced["negative_tokens"][0] == "DEADIFF_TOKENS"
    assert all(advanced[name][0] == "FLOAT" and advanced[name][1]["default"] == 1.0 for name in ("key_weight", "value_weight"))
    assert "per latent" in info["DEADiffApplyAdvanced"]["input"]["required"]["combine"][0]
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

    from support.paths import REPO_ROOT

    workflow = tmp_path / "workflow_api.json"
    workflow.write_text(json.dumps(graph()))
    command = [sys.executable, "-m", "scripts.run_workflow", str(workflow), "--url", server.url, "--set", "9.seed=77"]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("11 images: output/") and done.stdout.strip().endswith(".png")
    broken = dict(graph(), **{"5": {"class_type": "DEADiffLoader", "inputs": {"deadiff_name": "missing.ckpt"}}})
    workflow.write_text(json.dumps(broken))
    failed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert failed.returncode == 1 and "DEADiffLoader" in failed.stderr and "missing.ckpt" in failed.stderr


def test_lora_and_controlnet_compose_with_deadiff_in_either_order(server, comfy):
    from scripts.sd15 import sd15_controlnet_file, sd15_lora_file

    sd15_lora_file(server.model_path("loras", "random_lora.safetensors"), seed=31)
    sd15_controlnet_file(comfy, server.model_path("controlnet", "random_canny.safetensors"), seed=32)

    def with_lora_and_controlnet(lora_first):
        prompt = graph()
        prompt["12"] = {"class_type": "LoraLoaderModelOnly",
                        "inputs": {"model": ["1", 0] if lora_first else ["8", 0], "lora_name": "random_lora.safetensors",
                                   "strength_model": 1.0}}
        if lora_first:
            prompt["8"]["inputs"]["model"] = ["12", 0]
        prompt["13"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "random_canny.safetensors"}}
        prompt["14"] = {"class_type": "Canny", "inputs": {"image": ["6", 0], "low_threshold": 0.4, "high_threshold": 0.8}}
        prompt["15"] = {"class_type": "ControlNetApplyAdvanced",
                        "inputs": {"positive": ["2", 0], "negative": ["3", 0], "control_net": ["13", 0], "image": ["14", 0],
                                   "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}}
        prompt["9"]["inputs"].update(model=["8", 0] if lora_first else ["12", 0], positive=["15", 0], negative=["15", 1])
        return prompt

    _, deadiff_only = saved_image(server, run_ok(server, graph()))
    _, after = saved_image(server, run_ok(server, with_lora_and_controlnet(lora_first=False)))
    _, before = saved_image(server, run_ok(server, with_lora_and_controlnet(lora_first=True)))
    assert np.abs(after - deadiff_only).mean() > 2  # LoRA and ControlNet act alongside DEADiff
    assert np.array_equal(after, before)  # and DEADiff's patches commute with LoRA's weight patches


def test_mix_with_all_weight_on_one_reference_equals_that_reference(server):
    mixed = graph()
    mixed["16"] = {"class_type": "LoadImage", "inputs": {"image": SECOND_REFERENCE}}
    mixed["17"] = {"class_type": "DEADiffEncode", "inputs": {"deadiff": ["5", 0], "image": ["16", 0]}}
    mixed["18"] = {"class_type": "DEADiffMix", "inputs": {"tokens_1": ["7", 0], "ratio_1": 1.0,
                                                          "tokens_2": ["17", 0], "ratio_2": 0.0}}
    mixed["8"]["inputs"]["tokens"] = ["18", 0]
    _, only_first = saved_image(server, run_ok(server, mixed))
    _, first = saved_image(server, run_ok(server, graph()))
    assert np.array_equal(only_first, first)
    mixed["18"]["inputs"].update(ratio_1=0.5, ratio_2=0.5)
    _, half = saved_image(server, run_ok(server, mixed))
    assert np.abs(half - first).mean() > 0.5


def test_style_only_load_gives_the_same_style_image(server):
    style_only = graph()
    style_only["5"]["inputs"]["branches"] = "style only"
    _, lean = saved_image(server, run_ok(server, style_only))
    _, full = saved_image(server, run_ok(server, graph()))
    assert np.array_equal(lean, full)
    style_only["8"]["inputs"]["mode"] = "content"
    _, error = server.run(style_only)
    assert "loaded with style only" in error


# ---------------------------------------------------------------- per latent, negative reference, key/value weights

@pytest.fixture(scope="module")
def advanced_today(server):
    """DEADiff Apply (Advanced) as a workflow saved before these controls has it: none of them in the prompt."""
    return saved_image(server, run_ok(server, advanced_graph()))[1]


def test_key_and_value_weights_at_one_give_today_s_image_and_values_alone_change_it(server, advanced_today):
    _, ones = saved_image(server, run_ok(server, advanced_graph(key_weight=1.0, value_weight=1.0)))
    assert np.array_equal(ones, advanced_today)
    _, values = saved_image(server, run_ok(server, advanced_graph(value_weight=2.0)))
    assert np.abs(values - advanced_today).mean() > 1, "value_weight did not change the image"


def test_a_negative_reference_changes_the_image(server, advanced_today):
    _, negative = saved_image(server, run_ok(server, negative_graph()))
    assert np.abs(negative - advanced_today).mean() > 2, "the negative reference did not change the image"


def test_per_latent_references_condition_each_latent_with_its_own(server):
    """Latent 0 reads the first reference as a run with that reference alone gives it; latent 1 the second."""
    (_, first), (_, second) = saved_images(server, run_ok(server, per_latent_graph()))
    alone = graph()
    alone["4"]["inputs"]["batch_size"] = 2
    (_, alone_first), (_, alone_second) = saved_images(server, run_ok(server, alone))
    assert np.abs(first - alone_first).max() <= 1
    assert np.abs(second - alone_second).mean() > 2, "latent 1 did not read the second reference"
