"""The example workflows as the editor offers them: served by the real server from example_workflows/ (no
rename hint in its log), listed with their thumbnails in the editor's template browser, thumbnails that are
the editor's own render of each graph (scripts/render_thumbnails.py), and loader nodes that name their model
files in properties.models, which the editor turns into its missing-models notice on a server without them.

The server here is a fresh one with debug logging and no model files at all (the session's server has the
workflows' files under their names once test_workflows.py has run)."""
import glob
import io
import json
import os
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
from PIL import Image

from scripts import build_workflows, render_thumbnails
from scripts.browser import Browser, chromium_missing_reason
from scripts.comfy_server import PACK_FOLDER_NAME, ComfyServer
from support.paths import COMFYUI_PATH, REPO_ROOT

FOLDER = os.path.join(REPO_ROOT, "example_workflows")
NAMES = sorted(os.path.basename(path)[:-5] for path in glob.glob(os.path.join(FOLDER, "*.json")))
RENAME_HINT = "consider renaming it to 'example_workflows'"
# the models folder each loader's file goes in (ComfyUI's own folder names; "deadiff" is this pack's)
LOADER_FOLDERS = {"CheckpointLoaderSimple": "checkpoints", "DEADiffLoader": "deadiff", "LoraLoaderModelOnly": "loras",
                  "LoraLoader": "loras", "ControlNetLoader": "controlnet", "CLIPVisionLoader": "clip_vision"}
# what the editor treats as a model file name (frontend 1.49, missingModelScan.ts MODEL_FILE_EXTENSIONS)
MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft", ".onnx", ".gguf")
# where the editor's missing-models notice offers downloads from (1.32 MissingModelsWarning.vue, 1.49
# missingModelDownload.ts ALLOWED_SOURCES)
DOWNLOAD_SOURCES = ("https://huggingface.co/", "https://civitai.com/")


def workflow(name):
    with open(os.path.join(FOLDER, f"{name}.json")) as f:
        return json.load(f)


def picture(data):
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float32)


@pytest.fixture(scope="module")
def bare_server(tmp_path_factory):
    """A real server with this pack, debug logging, no model files, and a one-file pack that keeps its
    workflows in workflows/ (so the log shows what the rename hint looks like when it is due)."""
    base = tmp_path_factory.mktemp("bare_comfyui")
    probe = base / "custom_nodes" / "hint_probe"
    (probe / "workflows").mkdir(parents=True)
    (probe / "__init__.py").write_text("NODE_CLASS_MAPPINGS = {}\n")
    (probe / "workflows" / "probe.json").write_text("{}\n")
    server = ComfyServer(COMFYUI_PATH, REPO_ROOT, str(base), extra_args=("--verbose", "DEBUG"))
    yield server
    server.stop()


@pytest.fixture
def editor(bare_server):
    reason = chromium_missing_reason()
    if reason:
        pytest.fail(reason)
    with Browser(settings={"Comfy.Workflow.ShowMissingModelsWarning": True}) as browser:
        yield browser.open(bare_server.url)


def fetch(url):
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.headers.get("Content-Type"), response.read()


def test_every_workflow_has_a_thumbnail_that_is_a_picture_of_a_graph():
    assert len(NAMES) >= 8
    for name in NAMES:
        path = os.path.join(FOLDER, f"{name}.jpg")
        assert os.path.isfile(path), f"{name}: no thumbnail; run python -m scripts.render_thumbnails"
        assert 2_000 < os.path.getsize(path) <= 100_000, path
        image = Image.open(path)
        assert image.format == "JPEG" and image.size == (render_thumbnails.SIZE, render_thumbnails.SIZE), path
        pixels = np.asarray(image.convert("L"), dtype=np.float32)
        # the editor's dark canvas with lighter nodes and text on it: not blank, not one flat colour
        assert pixels.std() > 8, f"{path}: nearly uniform (std {pixels.std():.1f})"
        assert 0.02 < (pixels > pixels.mean() + 20).mean() < 0.6, path
    assert sorted(os.path.basename(path)[:-4] for path in glob.glob(os.path.join(FOLDER, "*.jpg"))) == NAMES
    assert not glob.glob(os.path.join(REPO_ROOT, "workflows")), "workflows/ is now example_workflows/"


def test_every_loader_names_its_file_with_a_download_in_properties_models(bare_server):
    folders = {folder["name"] for folder in bare_server.get("/experiment/models")}
    assert "deadiff" in folders and "checkpoints" in folders
    seen = set()
    for name in NAMES:
        for node in workflow(name)["nodes"]:
            files = [v for v in node["widgets_values"] if isinstance(v, str) and v.endswith(MODEL_EXTENSIONS)]
            models = node["properties"].get("models", [])
            if not files:
                assert not models, f"{name}: {node['type']} names no model file but has properties.models"
                continue
            assert node["type"] in LOADER_FOLDERS, f"{name}: {node['type']} loads {files}: which folder?"
            assert sorted(m["name"] for m in models) == sorted(files), (name, node["type"], models)
            for model in models:
                assert set(model) == {"name", "url", "directory"}, model
                assert model["directory"] == LOADER_FOLDERS[node["type"]] and model["directory"] in folders, model
                assert model["url"].startswith(DOWNLOAD_SOURCES), model
                if model["url"].startswith("https://huggingface.co/"):
                    assert "/resolve/main/" in model["url"] and model["url"].endswith("/" + model["name"]), model
                else:  # Civitai's download links name the version, and the download is named as the file
                    assert model["url"].startswith("https://civitai.com/api/download/models/"), model
                assert (model["directory"], model["url"]) == build_workflows.MODEL_FILES[model["name"]]
                seen.add(model["name"])
    assert seen == set(build_workflows.MODEL_FILES)  # every file in the table is used, each with its one source


def test_the_server_serves_the_folder_without_the_rename_hint(bare_server):
    log = bare_server.log()
    assert "Trying to load custom node" in log  # debug logging is on, so the hint would be in the log
    assert RENAME_HINT in log and "'hint_probe'" in log  # ... as it is for a pack with a workflows/ folder
    assert [line for line in log.splitlines() if RENAME_HINT in line and PACK_FOLDER_NAME in line] == []
    listed = bare_server.get("/api/workflow_templates")
    assert sorted(listed[PACK_FOLDER_NAME]) == NAMES
    for name in NAMES:
        base = f"{bare_server.url}/api/workflow_templates/{PACK_FOLDER_NAME}/{name}"
        status, kind, body = fetch(f"{base}.json")
        assert status == 200 and json.loads(body) == workflow(name)
        status, kind, body = fetch(f"{base}.jpg")  # the URL the template browser builds for a custom node's template
        assert status == 200 and kind == "image/jpeg" and Image.open(io.BytesIO(body)).size == (render_thumbnails.SIZE,) * 2


def test_the_template_browser_lists_the_workflows_with_their_thumbnails(editor):
    thumbnails = {}

    def seen(response):
        if f"/api/workflow_templates/{PACK_FOLDER_NAME}/" in response.url and response.url.endswith(".jpg"):
            thumbnails[response.url.rsplit("/", 1)[1][:-4]] = (response.status, response.headers.get("content-type"))

    editor.page.on("response", seen)
    editor.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    editor.page.wait_for_selector('[data-testid="template-workflows-content"]')
    editor.page.get_by_text(PACK_FOLDER_NAME, exact=True).first.click()  # the pack's entry under Extensions
    for name in NAMES:  # a card loads its thumbnail once it is scrolled into view
        card = f'[data-testid="template-workflow-{name}"]'
        editor.page.locator(card).scroll_into_view_if_needed()
        editor.page.wait_for_function("""([card, size]) => [...document.querySelector(card).querySelectorAll("img")]
            .some((img) => img.complete && img.naturalWidth === size)""", arg=[card, render_thumbnails.SIZE], timeout=60000)
    cards = editor.evaluate("""() => [...document.querySelectorAll('[data-testid^="template-workflow-"]')]
        .map((card) => card.dataset.testid.replace("template-workflow-", ""))""")
    assert sorted(cards) == NAMES
    assert thumbnails == {name: (200, "image/jpeg") for name in NAMES}
    editor.screenshot(os.path.join(REPO_ROOT, "tests", "artifacts", "template_browser.png"))


def test_a_workflow_whose_models_are_missing_names_them_in_the_editor(editor):
    """Frontend 1.32 opens its Missing Models dialog (downloads only for .safetensors/.sft names there, so the
    .ckpt is listed with that reason); 1.49 has no dialog: its error overlay leads to the right-hand panel's
    Missing Models list, each with its folder and a Download button."""
    editor.evaluate("async (workflow) => { await window.app.loadGraphData(workflow, true, true, 'deadiff_style_transfer.json'); }",
                    workflow("deadiff_style_transfer"))
    editor.page.wait_for_function("() => document.querySelector('.comfy-missing-models') || /View details/.test(document.body.innerText)")
    if editor.evaluate("() => !!document.querySelector('.comfy-missing-models')"):
        rows = editor.evaluate("() => [...document.querySelectorAll('.comfy-missing-models li')].map((li) => li.innerText)")
        assert sorted(row.splitlines()[0] for row in rows) == ["checkpoints / v1-5-pruned-emaonly.safetensors",
                                                               "deadiff / deadiff_v1.ckpt"], rows
        assert all("Copy URL" in row for row in rows) and not any("Invalid directory" in row for row in rows), rows
    else:
        editor.page.get_by_text("View details").first.click()
        editor.page.get_by_text("Missing Models").first.wait_for()
        text = editor.evaluate("() => document.body.innerText")
        section = text[text.index("Missing Models"):]
        for name, folder in (("v1-5-pruned-emaonly.safetensors", "checkpoints"), ("deadiff_v1.ckpt", "deadiff")):
            assert f"{name}\n{folder}\nDownload" in section, section[:1000]
    editor.screenshot(os.path.join(REPO_ROOT, "tests", "artifacts", "missing_models.png"))


def test_the_thumbnails_are_the_editor_s_render(bare_server, tmp_path):
    """scripts/render_thumbnails.py renders every workflow again; on the reference runtime (where the committed
    ones were rendered) each committed thumbnail is close to its own fresh render and far from the others'."""
    done = subprocess.run([sys.executable, "-m", "scripts.render_thumbnails", "--url", bare_server.url, "--out", str(tmp_path)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    fresh = {name: picture((tmp_path / f"{name}.jpg").read_bytes()) for name in NAMES}
    assert all(pixels.std() > 8 for pixels in fresh.values())
    version = bare_server.get("/system_stats")["system"]["comfyui_version"]
    if version != build_workflows.REFERENCE_COMFYUI:
        print(f"ComfyUI {version}: rendered, not compared (the committed thumbnails come from {build_workflows.REFERENCE_COMFYUI})")
        return
    for name in NAMES:
        with open(os.path.join(FOLDER, f"{name}.jpg"), "rb") as f:
            committed = picture(f.read())
        own = np.abs(committed - fresh[name]).mean()
        others = min(np.abs(committed - fresh[other]).mean() for other in NAMES if other != name)
        print(f"{name}: {own:.2f} from its fresh render, {others:.2f} from the nearest other")
        assert own < min(1.0, others / 2), (name, own, others)
