"""The pack's front end (web/) in the real ComfyUI editor: a headless Chromium on the session's
ComfyUI server, driven through the page's own `app` and real mouse events (tests/browser.py).

Screenshots go to tests/artifacts/ (git-ignored)."""
import json
import os
import urllib.request

import numpy as np
import pytest
from PIL import Image

from deadiff_core.layer_weights import PRESETS, format_weights, parse_layer_weights
from deadiff_core.layers import SD15_LAYERS
from deadiff_core.synthetic import OfficialLayout, official_state_dict, save_official_checkpoint
from scripts.browser import Browser
from scripts.comfy_server import PACK_FOLDER_NAME as PACK_FOLDER
from support.layout_spec import SPEC_LAYERS, SPEC_RESOLUTIONS
from support.paths import REPO_ROOT

ARTIFACTS = os.path.join(REPO_ROOT, "tests", "artifacts")
# the real ViT-L/14 (DEADiff Encode needs its 257 x 1024 tokens), one small Q-Former, style branch only
INFO_LAYOUT = OfficialLayout(qformer_layers=1, intermediate=256, vocab=4200, positions=16, proj_hidden=256)
INFO_CHECKPOINT, INFO_REFERENCE = "deadiff_frontend_style_only.ckpt", "deadiff_frontend_reference.png"
ADVANCED_WIDGETS = ["mode", "weight", "start_at", "end_at", "style_weight", "content_weight", "layer_weights", "combine",
                    "key_weight", "value_weight"]


# ---------------------------------------------------------------- the tables the editor draws from

def test_the_node_definition_carries_the_layer_table_and_the_presets(comfy_server):
    """web/deadiff.js mirrors no Python table: it reads them from DEADiff Apply (Advanced)'s definition."""
    with urllib.request.urlopen(comfy_server.url + "/object_info/DEADiffApplyAdvanced", timeout=30) as response:
        options = json.loads(response.read())["DEADiffApplyAdvanced"]["input"]["required"]["layer_weights"][1]
    stages = {"input": "down", "middle": "middle", "output": "up"}
    assert options["deadiff_layers"] == [
        {"index": index, "block": block, "stage": stages[patch_key[0]], "resolution": resolution, "branch": branch}
        for index, ((patch_key, block, _, branch), resolution) in enumerate(zip(SPEC_LAYERS, SPEC_RESOLUTIONS))]
    assert {name: tuple(weights) for name, weights in options["deadiff_presets"].items()} == PRESETS
    assert list(options["deadiff_presets"]) == list(PRESETS)


# ---------------------------------------------------------------- in the editor

@pytest.fixture
def graph(browser):
    """A blank graph with the DEADiff nodes wired as a user would: ids by role."""
    browser.new_graph()
    ids = {
        "checkpoint": browser.add_node("CheckpointLoaderSimple", (0, 0)),
        "loader": browser.add_node("DEADiffLoader", (0, 200)),
        "image": browser.add_node("LoadImage", (0, 360)),
        "encode": browser.add_node("DEADiffEncode", (380, 300)),
        "advanced": browser.add_node("DEADiffApplyAdvanced", (720, 0)),
    }
    browser.connect(ids["loader"], "DEADIFF", ids["encode"], "deadiff")
    browser.connect(ids["image"], "IMAGE", ids["encode"], "image")
    browser.connect(ids["checkpoint"], "MODEL", ids["advanced"], "model")
    browser.connect(ids["loader"], "DEADIFF", ids["advanced"], "deadiff")
    browser.connect(ids["encode"], "DEADIFF_TOKENS", ids["advanced"], "tokens")
    return ids


def layer_map(browser, node_id, call, *args):
    """Call a method of the node's layer-map widget in the page."""
    return browser.evaluate("""([id, call, args]) => {
        const widget = window.app.graph.getNodeById(id).widgets.find((w) => w.name === "layer_map");
        return widget[call](...args);
    }""", [node_id, call, list(args)])


def cell_point(browser, node_id, index, fraction_from_top=0.5):
    """A point of a layer's cell: centred (where a click goes), or for a pixel check (fraction_from_top
    given), off to the left of the centred weight label."""
    x, y, w, h = layer_map(browser, node_id, "cellBounds", index)
    return x + w * (0.5 if fraction_from_top == 0.5 else 0.15), y + h * fraction_from_top


def saved_values(browser, node_id):
    (node,) = [n for n in browser.serialize()["nodes"] if n["id"] == node_id]
    return node.get("widgets_values")


def our_errors(browser):
    return browser.extension_errors(PACK_FOLDER, ["DEADiff.UI"])


def is_orange(rgb):
    r, g, b = rgb
    return r > 150 and r > b + 60


def is_blue(rgb):
    r, g, b = rgb
    return b > 150 and b > r + 60


def is_dark(rgb):
    return max(rgb) < 60


def test_extension_loads_without_errors(browser):
    with urllib.request.urlopen(browser.url + "/extensions", timeout=30) as response:
        served = json.loads(response.read())
    assert f"/extensions/{PACK_FOLDER}/deadiff.js" in served
    assert "DEADiff.UI" in browser.evaluate("() => window.app.extensions.map((e) => e.name)")
    assert browser.evaluate("() => ['DEADiffLoader', 'DEADiffEncode', 'DEADiffApplyAdvanced'].every("
                            "(t) => t in window.LiteGraph.registered_node_types)")
    assert our_errors(browser) == []


def test_layer_map_draws_the_unet_and_clicks_and_drags_edit_the_saved_text(browser, graph):
    advanced = graph["advanced"]
    names = browser.evaluate("(id) => window.app.graph.getNodeById(id).widgets.map((w) => w.name)", advanced)
    assert names == ADVANCED_WIDGETS + ["layer_map"]  # last: widgets_values stay positional
    all_ones = format_weights(PRESETS["all"])
    assert saved_values(browser, advanced) == ["style", 1, 0, 1, 1, 1, all_ones, "average", 1, 1]
    browser.show_nodes([advanced])

    # drawn as a U: down blocks descend, the middle block is lowest, up blocks climb back
    centres = [cell_point(browser, advanced, i) for i in range(16)]
    rows = {res: sorted({round(centres[layer.index][1]) for layer in SD15_LAYERS if layer.resolution_at_512px == res})
            for res in (64, 32, 16, 8)}
    assert all(len(ys) == 1 for ys in rows.values()) and rows[64] < rows[32] < rows[16] < rows[8]
    assert [c[0] for c in centres] == sorted(c[0] for c in centres)
    # weight 1 of 2 fills the lower half, in the branch's colour
    assert is_orange(browser.pixel(*cell_point(browser, advanced, 2, 0.8)))   # style layer
    assert is_blue(browser.pixel(*cell_point(browser, advanced, 6, 0.8)))     # content layer (middle block)
    assert is_dark(browser.pixel(*cell_point(browser, advanced, 2, 0.15)))

    # a click cycles 1 -> 1.5, a drag down by 40 graph units sets 1 - 0.8
    browser.click_graph(*cell_point(browser, advanced, 4))
    start = cell_point(browser, advanced, 0)
    browser.drag_graph(start, (start[0], start[1] + 40))
    expected = [0.2, 1, 1, 1, 1.5] + [1] * 11
    assert browser.widget_values(advanced)["layer_weights"] == format_weights(expected)
    assert saved_values(browser, advanced)[6] == format_weights(expected)
    assert parse_layer_weights(saved_values(browser, advanced)[6]) == tuple(expected)
    assert is_blue(browser.pixel(*cell_point(browser, advanced, 4, 0.35)))     # 1.5 of 2: three quarters full
    assert is_dark(browser.pixel(*cell_point(browser, advanced, 0, 0.6)))      # 0.2 of 2: a sliver
    assert browser.evaluate("() => window.app.graph._version") > 0
    browser.screenshot(os.path.join(ARTIFACTS, "layer_map_edited.png"))
    assert our_errors(browser) == []


def test_typing_a_preset_redraws_the_map_and_editing_expands_it(browser, graph):
    advanced = graph["advanced"]
    browser.show_nodes([advanced])
    # the text widget's own editor: click it, type, Enter
    x, y = browser.evaluate("""(id) => {
        const node = window.app.graph.getNodeById(id), widget = node.widgets.find((w) => w.name === "layer_weights");
        return [node.pos[0] + node.size[0] / 2, node.pos[1] + widget.y + widget.computedHeight / 2];
    }""", advanced)
    browser.click_graph(x, y)
    dialog = browser.page.locator(".graphdialog input, .graphdialog textarea").first
    dialog.fill("Content layers only")
    dialog.press("Enter")
    browser.redraw()
    assert browser.widget_values(advanced)["layer_weights"] == "Content layers only"
    parsed = layer_map(browser, advanced, "parsed")
    assert parsed["preset"] == "content layers only"
    assert tuple(parsed["weights"]) == PRESETS["content layers only"]
    assert is_dark(browser.pixel(*cell_point(browser, advanced, 2, 0.8)))     # style layer now 0
    assert is_blue(browser.pixel(*cell_point(browser, advanced, 6, 0.8)))

    browser.click_graph(*cell_point(browser, advanced, 6))                    # 1 -> 1.5, the preset expands
    expected = list(PRESETS["content layers only"])
    expected[6] = 1.5
    assert saved_values(browser, advanced)[6] == format_weights(expected)

    # every preset, as the JS parser reads it, equals Python's
    for name, weights in PRESETS.items():
        browser.evaluate("([id, text]) => { window.app.graph.getNodeById(id).widgets"
                         ".find((w) => w.name === 'layer_weights').value = text; }", [advanced, name.upper()])
        assert tuple(layer_map(browser, advanced, "parsed")["weights"]) == weights, name
    for bad in ("1, 2, 3", "1, x" + ", 1" * 14, ", ".join(["-1"] * 16)):
        browser.evaluate("([id, text]) => { window.app.graph.getNodeById(id).widgets"
                         ".find((w) => w.name === 'layer_weights').value = text; }", [advanced, bad])
        assert layer_map(browser, advanced, "parsed")["error"], bad
        with pytest.raises(ValueError):
            parse_layer_weights(bad)
    browser.redraw()
    assert our_errors(browser) == []


def test_layer_weights_from_a_link_leave_the_map_read_only(browser, graph):
    advanced = graph["advanced"]
    text = browser.add_node("PrimitiveString", (300, -200), {"value": "down blocks only"})
    browser.connect(text, 0, advanced, "layer_weights")
    browser.show_nodes([advanced])
    before = saved_values(browser, advanced)[6]
    browser.click_graph(*cell_point(browser, advanced, 3))
    assert saved_values(browser, advanced)[6] == before
    assert is_dark(browser.pixel(*cell_point(browser, advanced, 2, 0.8)))    # no bars: the value comes from the link
    assert browser.graph_to_prompt()[str(advanced)]["inputs"]["layer_weights"] == [str(text), 0]
    assert our_errors(browser) == []


def test_saved_workflow_loads_back_and_converts_to_an_api_prompt(browser, graph):
    advanced = graph["advanced"]
    layer_map(browser, advanced, "setLayerWeight", 9, 0.35)
    text = browser.widget_values(advanced)["layer_weights"]
    workflow = browser.serialize()

    browser.new_graph()
    types = browser.load_workflow(workflow)
    assert browser.toasts() == []  # the editor's own validation found nothing to fix
    assert sorted(types) == sorted(["CheckpointLoaderSimple", "DEADiffLoader", "LoadImage", "DEADiffEncode",
                                    "DEADiffApplyAdvanced"])
    assert saved_values(browser, advanced) == [n for n in workflow["nodes"] if n["id"] == advanced][0]["widgets_values"]
    assert layer_map(browser, advanced, "parsed")["weights"][9] == 0.35

    prompt = browser.graph_to_prompt()
    assert {node["class_type"] for node in prompt.values()} >= {"DEADiffLoader", "DEADiffEncode", "DEADiffApplyAdvanced"}
    inputs = prompt[str(advanced)]["inputs"]
    assert inputs["layer_weights"] == text and "layer_map" not in inputs
    assert inputs["deadiff"] == [str(graph["loader"]), 0] and inputs["tokens"] == [str(graph["encode"]), 0]
    assert inputs["model"] == [str(graph["checkpoint"]), 0]
    assert {k: inputs[k] for k in ("mode", "weight", "combine")} == {"mode": "style", "weight": 1, "combine": "average"}
    assert prompt[str(graph["encode"])]["inputs"] == {"deadiff": [str(graph["loader"]), 0], "image": [str(graph["image"]), 0],
                                                      "fit": "squash"}
    assert parse_layer_weights(inputs["layer_weights"])[9] == 0.35


def test_workflow_written_without_the_extension_loads_with_its_preset(browser, tmp_path):
    """A UI-format file as another ComfyUI (or an older pack) saves it: no layer map, a preset name."""
    workflow = {
        "last_node_id": 3, "last_link_id": 2, "version": 0.4, "groups": [], "config": {}, "extra": {},
        "nodes": [
            {"id": 1, "type": "DEADiffLoader", "pos": [0, 0], "size": [315, 82], "flags": {}, "order": 0, "mode": 0,
             "inputs": [], "outputs": [{"name": "DEADIFF", "type": "DEADIFF", "links": [1, 2]}],
             "properties": {}, "widgets_values": ["deadiff_v1.ckpt", "auto"]},
            {"id": 2, "type": "DEADiffApplyAdvanced", "pos": [400, 0], "size": [315, 300], "flags": {}, "order": 1,
             "mode": 0, "inputs": [{"name": "model", "type": "MODEL", "link": None},
                                   {"name": "deadiff", "type": "DEADIFF", "link": 1},
                                   {"name": "tokens", "type": "DEADIFF_TOKENS", "link": None},
                                   {"name": "mask", "type": "MASK", "link": None},
                                   {"name": "content_tokens", "type": "DEADIFF_TOKENS", "link": None}],
             "outputs": [{"name": "MODEL", "type": "MODEL", "links": []}], "properties": {},
             "widgets_values": ["style and content", 1.2, 0.1, 0.9, 1, 0.5, "style layers only", "concat"]},
            {"id": 3, "type": "DEADiffEncode", "pos": [0, 200], "size": [315, 70], "flags": {}, "order": 2, "mode": 0,
             "inputs": [{"name": "deadiff", "type": "DEADIFF", "link": 2}, {"name": "image", "type": "IMAGE", "link": None},
                        {"name": "clip_vision", "type": "CLIP_VISION", "link": None}],
             "outputs": [{"name": "DEADIFF_TOKENS", "type": "DEADIFF_TOKENS", "links": []}], "properties": {},
             "widgets_values": []},
        ],
        "links": [[1, 1, 0, 2, 1, "DEADIFF"], [2, 1, 0, 3, 0, "DEADIFF"]],
    }
    path = tmp_path / "deadiff_preset.json"
    path.write_text(json.dumps(workflow))
    browser.new_graph()
    assert browser.load_workflow(str(path)) == ["DEADiffLoader", "DEADiffApplyAdvanced", "DEADiffEncode"]
    assert browser.toasts() == []
    # written before key_weight and value_weight: the editor gives them their defaults, after the saved values
    today = workflow["nodes"][1]["widgets_values"] + [1, 1]
    values = browser.widget_values(2)
    assert [values[name] for name in ADVANCED_WIDGETS] == today
    parsed = layer_map(browser, 2, "parsed")
    assert parsed["preset"] == "style layers only" and tuple(parsed["weights"]) == PRESETS["style layers only"]
    assert browser.evaluate("() => window.app.graph.getNodeById(2).size[0]") >= 460   # widened for the map
    prompt = browser.graph_to_prompt()
    assert prompt["2"]["inputs"]["layer_weights"] == "style layers only"
    assert prompt["2"]["inputs"]["mode"] == "style and content" and prompt["2"]["inputs"]["deadiff"] == ["1", 0]
    assert prompt["2"]["inputs"]["key_weight"] == prompt["2"]["inputs"]["value_weight"] == 1
    assert "negative_tokens" not in prompt["2"]["inputs"]
    assert prompt["1"] == {"class_type": "DEADiffLoader",
                           # written before the loader had `branches`: the editor fills in its default
                           "inputs": {"deadiff_name": "deadiff_v1.ckpt", "dtype": "auto", "branches": "both"},
                           "_meta": {"title": "Load DEADiff Model"}}
    # written before Encode had `fit`: squash, today's images
    assert prompt["3"]["inputs"] == {"deadiff": ["1", 0], "fit": "squash"}
    assert saved_values(browser, 2) == today


def test_layer_map_works_in_the_nodes_2_renderer(comfy_server):
    """Nodes 2.0 (Vue nodes, experimental in this frontend) draws canvas widgets on a canvas of their own."""
    with Browser(settings={"Comfy.VueNodes.Enabled": True}) as browser:
        browser.open(comfy_server.url)
        browser.new_graph()
        advanced = browser.add_node("DEADiffApplyAdvanced", (0, 0))
        browser.show_nodes([advanced])
        canvas = browser.node_element(advanced).locator("canvas")
        canvas.wait_for()

        def page_point(index, fraction_from_top=0.5):
            x, y, w, h = layer_map(browser, advanced, "cellBoundsInWidget", index)
            box = canvas.bounding_box()
            return box["x"] + x + w / 2, box["y"] + y + h * fraction_from_top

        browser.page.mouse.click(*page_point(4))
        mouse = browser.page.mouse
        x, y = page_point(0)
        mouse.move(x, y)
        mouse.down()
        for i in range(1, 11):
            mouse.move(x, y + 4 * i)
            browser.page.wait_for_timeout(15)
        mouse.up()
        expected = [0.2, 1, 1, 1, 1.5] + [1] * 11
        assert saved_values(browser, advanced)[6] == format_weights(expected)
        browser.screenshot(os.path.join(ARTIFACTS, "layer_map_nodes_2.png"))
        assert our_errors(browser) == []


@pytest.fixture(scope="module")
def info_files(comfy_server):
    """A style-only DEADiff file with its own ViT-L (about 0.86 GB) and a reference image; removed, and
    the server's models unloaded, after this module."""
    path = comfy_server.model_path("deadiff", INFO_CHECKPOINT)
    save_official_checkpoint(path, official_state_dict(INFO_LAYOUT, seed=31, branches=("style",), with_other_parts=False))
    ramp = np.linspace(0, 255, 96, dtype=np.uint8)
    Image.fromarray(np.stack(np.broadcast_arrays(ramp[:, None], ramp[None, :], 128), -1).astype(np.uint8)).save(
        comfy_server.input_path(INFO_REFERENCE))
    yield INFO_CHECKPOINT, INFO_REFERENCE
    comfy_server.free()
    os.remove(path)


def test_loader_and_encoder_show_what_they_did_after_a_run(browser, info_files):
    checkpoint, reference = info_files
    browser.new_graph()
    loader = browser.add_node("DEADiffLoader", (0, 0), {"deadiff_name": checkpoint})
    image = browser.add_node("LoadImage", (0, 160), {"image": reference})
    encode = browser.add_node("DEADiffEncode", (380, 0))
    save = browser.add_node("DEADiffSaveTokens", (760, 0))
    browser.connect(loader, "DEADIFF", encode, "deadiff")
    browser.connect(image, "IMAGE", encode, "image")
    browser.connect(encode, "DEADIFF_TOKENS", save, "tokens")

    entry = browser.queue()
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert entry["outputs"][str(loader)]["deadiff_info"] and entry["outputs"][str(encode)]["deadiff_info"]
    shown = browser.evaluate("""async (ids) => {
        const info = (id) => window.app.graph.getNodeById(id).widgets?.find((w) => w.name === "deadiff_info")?.value;
        for (let i = 0; i < 100 && !(info(ids[0]) && info(ids[1])); i++) await new Promise((r) => setTimeout(r, 100));
        return ids.map(info);
    }""", [loader, encode])
    assert shown == [entry["outputs"][str(loader)]["deadiff_info"][0], entry["outputs"][str(encode)]["deadiff_info"][0]]
    loader_text, encode_text = shown
    assert loader_text.startswith("official checkpoint, branches: style (no content branch)")
    assert "with its own CLIP vision tower" in loader_text and "weights kept in float" in loader_text
    assert encode_text.startswith("1 reference: style tokens, 16 per reference and branch (768 wide)")
    # shown, never saved: the nodes' saved values are as before the run
    assert saved_values(browser, loader) == [checkpoint, "auto", "both"]
    assert saved_values(browser, encode) == ["squash"]
    browser.show_nodes([loader, image, encode, save])
    browser.screenshot(os.path.join(ARTIFACTS, "after_run.png"))
    assert our_errors(browser) == []
