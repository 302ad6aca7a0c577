"""The shared workflows (example_workflows/*.json) as users get them: generated from the current node
definitions, loaded in the real editor with nothing missing, converted to an API prompt there,
and executed by the real server with random-weight files standing in under the real names.

Executions run at 128 px and 2 steps instead of 512 px and 50 (CPU time); everything else is the
workflow's own."""
import glob
import json
import os
import subprocess
import sys

import pytest

from scripts import build_workflows
from scripts.comfy_server import PACK_FOLDER_NAME
from scripts.graphs import CHECKPOINT, DEADIFF, run_ok
from scripts.images import reference_image
from scripts.sd15 import sd15_controlnet_file, sd15_lora_file
from support.editor import open_editor
from support.paths import REPO_ROOT

WORKFLOWS = sorted(glob.glob(os.path.join(REPO_ROOT, "example_workflows", "*.json")))
# save before reuse: deadiff_reuse_tokens loads what deadiff_save_tokens wrote
ORDER = sorted(WORKFLOWS, key=lambda path: "reuse" in path)
SMALL = {"EmptyLatentImage": {"width": 128, "height": 128}, "KSampler": {"steps": 2}}


@pytest.fixture(scope="module")
def stand_ins(comfy, server):
    """Random-weight files under the names the workflows use."""
    links = {("checkpoints", build_workflows.SD15): ("checkpoints", CHECKPOINT),
             ("deadiff", build_workflows.DEADIFF): ("deadiff", DEADIFF)}
    for (folder, name), (source_folder, source) in links.items():
        if not os.path.exists(server.model_path(folder, name)):
            os.symlink(server.model_path(source_folder, source), server.model_path(folder, name))
    sd15_lora_file(server.model_path("loras", build_workflows.LORA), seed=41)
    sd15_controlnet_file(comfy, server.model_path("controlnet", build_workflows.CONTROLNET), seed=42)
    for name, source in ((build_workflows.STYLE_IMAGE, "style_02.jpeg"), (build_workflows.CONTENT_IMAGE, "content_01.jpeg"),
                         (build_workflows.SECOND_STYLE_IMAGE, "style_04.jpeg"), (build_workflows.NEGATIVE_IMAGE, "style_03.jpeg")):
        reference_image(source).save(server.input_path(name))
    return server


@pytest.fixture(scope="module")
def editor(stand_ins):
    with open_editor(stand_ins.url) as browser:
        yield browser


def test_committed_workflows_match_the_node_definitions(server):
    """On the reference runtime the files are exactly what its node definitions build; on every runtime each
    node, socket, output, link and widget value in them fits that runtime's definitions."""
    object_info = server.get("/object_info")
    built = build_workflows.build(object_info)
    assert sorted(f"{name}.json" for name in built) == [os.path.basename(path) for path in WORKFLOWS]
    reference = server.get("/system_stats")["system"]["comfyui_version"] == build_workflows.REFERENCE_COMFYUI
    print(f"exact match with ComfyUI {build_workflows.REFERENCE_COMFYUI}'s build: {'checked' if reference else 'not this runtime'}")
    for path in WORKFLOWS:
        with open(path) as f:
            committed = json.load(f)
        assert build_workflows.problems(committed, object_info) == [], path
        if reference:
            assert committed == built[os.path.basename(path)[:-5]], f"{path}: run python -m scripts.build_workflows"


def test_the_fit_check_finds_what_does_not_fit(server):
    object_info = server.get("/object_info")
    with open(os.path.join(REPO_ROOT, "example_workflows", "deadiff_style_transfer.json")) as f:
        committed = json.load(f)
    faults = {
        "no such node type": lambda workflow, nodes: nodes["DEADiffLoader"].update(type="DEADiffLoaderV9"),
        "input model CLIP is MODEL": lambda workflow, nodes: nodes["DEADiffApply"]["inputs"][0].update(type="CLIP"),
        "required input samples is missing": lambda workflow, nodes: nodes["VAEDecode"]["inputs"].pop(0),
        "output 1 MASK MASK is missing": lambda workflow, nodes: nodes["VAEDecode"]["outputs"].append(
            {"name": "MASK", "type": "MASK", "links": []}),
        "widget values": lambda workflow, nodes: nodes["KSampler"]["widgets_values"].insert(1, "fixed"),
        "does not match the nodes' sockets": lambda workflow, nodes: workflow["links"][0].__setitem__(5, "LATENT"),
    }
    for expected, spoil in faults.items():
        workflow = json.loads(json.dumps(committed))
        spoil(workflow, {node["type"]: node for node in workflow["nodes"]})
        found = build_workflows.problems(workflow, object_info)
        assert any(expected in problem for problem in found), (expected, found)


def test_the_issues_workflows_exist():
    kinds = {os.path.basename(path) for path in WORKFLOWS}
    assert {"deadiff_style_transfer.json", "deadiff_content_mode.json", "deadiff_style_and_content.json",
            "deadiff_style_mixing.json", "deadiff_lora_controlnet.json", "deadiff_regional_mask.json",
            "deadiff_save_tokens.json", "deadiff_reuse_tokens.json", "deadiff_batch_per_latent.json",
            "deadiff_negative_reference.json"} <= kinds
    with open(os.path.join(REPO_ROOT, "example_workflows", "deadiff_style_transfer.json")) as f:
        sampler = next(n for n in json.load(f)["nodes"] if n["type"] == "KSampler")
    assert sampler["widgets_values"][2:6] == [50, 8.0, "ddim", "ddim_uniform"]  # the official inference


@pytest.mark.parametrize("path", ORDER, ids=os.path.basename)
def test_workflow_loads_in_the_editor_converts_and_runs(stand_ins, editor, path):
    with open(path) as f:
        workflow = json.load(f)
    types = editor.load_workflow(workflow, os.path.basename(path))
    registered = editor.evaluate("(types) => types.filter((t) => !(t in window.LiteGraph.registered_node_types))", types)
    assert registered == [], f"missing nodes: {registered}"
    assert not [t for t in editor.toasts() if t["severity"] in ("warn", "error")]
    assert not editor.extension_errors(PACK_FOLDER_NAME, ("DEADiff.UI",))  # the editor's own 404s are not ours
    editor.show_nodes([node["id"] for node in workflow["nodes"]], zoom=0.6)
    editor.screenshot(os.path.join(REPO_ROOT, "tests", "artifacts", os.path.basename(path)[:-5] + ".png"))
    prompt = editor.graph_to_prompt()
    assert sorted(node["class_type"] for node in prompt.values()) == sorted(t for t in types if t != "Note")
    for node in prompt.values():
        node["inputs"].update(SMALL.get(node["class_type"], {}))
    entry = run_ok(stand_ins, prompt)
    written = [item for output in entry["outputs"].values() for items in output.values() for item in items
               if isinstance(item, dict) and "filename" in item]
    assert written and all(os.path.exists(stand_ins.output_path(item)) for item in written)


def test_a_workflow_saved_before_the_newer_advanced_inputs_gives_the_same_prompt(editor):
    """DEADiff Apply (Advanced) as workflows saved it before negative_tokens, key_weight and value_weight existed
    (no such socket, two widget values fewer): the editor gives it the defaults, so the same prompt as today's."""
    with open(os.path.join(REPO_ROOT, "example_workflows", "deadiff_regional_mask.json")) as f:
        workflow = json.load(f)
    editor.load_workflow(workflow, "deadiff_regional_mask.json")
    today = editor.graph_to_prompt()
    apply = next(node for node in workflow["nodes"] if node["type"] == "DEADiffApplyAdvanced")
    assert [socket["name"] for socket in apply["inputs"]][-1] == "negative_tokens"  # no link: nothing shifts
    apply["inputs"].pop()
    assert apply["widgets_values"][-2:] == [1.0, 1.0]  # key_weight, value_weight: the last saved widgets
    del apply["widgets_values"][-2:]
    editor.load_workflow(workflow, "deadiff_regional_mask_before.json")
    assert not [t for t in editor.toasts() if t["severity"] in ("warn", "error")]
    before = editor.graph_to_prompt()
    assert before == today
    assert {before[str(apply["id"])]["inputs"][name] for name in ("key_weight", "value_weight")} == {1.0}


def test_build_script_runs_against_a_server(server, tmp_path):
    done = subprocess.run([sys.executable, "-m", "scripts.build_workflows", "--url", server.url, "--out", str(tmp_path)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(list(tmp_path.glob("*.json"))) == len(WORKFLOWS)
