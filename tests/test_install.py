"""Installing the pack the way ComfyUI-Manager's git-clone install does: `git clone` into a fresh
ComfyUI's custom_nodes, `pip install -r requirements.txt`, start the server."""
import json
import os
import subprocess
import sys
import tomllib

from scripts.comfy_server import PACK_FOLDER_NAME, ComfyServer, pack_log_problems
from scripts.graphs import NODES
from support.paths import COMFYUI_PATH, REPO_ROOT


def cloned_pack(base_dir):
    target = os.path.join(base_dir, "custom_nodes", PACK_FOLDER_NAME)
    subprocess.run(["git", "clone", "--quiet", REPO_ROOT, target], check=True)
    return target


def start(base_dir):
    os.makedirs(os.path.join(base_dir, "custom_nodes"), exist_ok=True)
    return ComfyServer(COMFYUI_PATH, None, base_dir)


def test_git_clone_install_starts_cleanly_and_lists_every_node(tmp_path):
    pack = cloned_pack(tmp_path)
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "-r", "requirements.txt"], cwd=pack,
                         capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr
    assert "torch" not in pip.stdout.lower()  # never touches torch
    server = start(str(tmp_path))
    try:
        listed = server.get("/object_info")
        assert set(NODES) <= set(listed)
        assert not pack_log_problems(server.log())
        templates = server.get("/workflow_templates")[PACK_FOLDER_NAME]
        assert "deadiff_style_transfer" in templates
        status, workflow = server.request(f"/api/workflow_templates/{PACK_FOLDER_NAME}/deadiff_style_transfer.json")
        assert status == 200 and workflow["nodes"]
    finally:
        server.stop()


def test_a_broken_node_module_is_named_and_the_rest_still_loads(tmp_path):
    pack = cloned_pack(tmp_path)
    with open(os.path.join(pack, "nodes", "mix.py"), "w") as f:
        f.write('raise ImportError("simulated missing dependency")\n')
    server = start(str(tmp_path))
    try:
        listed = server.get("/object_info")
        assert "DEADiffMix" not in listed and set(NODES) - {"DEADiffMix"} <= set(listed)
        assert "[DEADiff] nodes/mix.py could not be imported" in server.log()
        assert "simulated missing dependency" in server.log()
    finally:
        server.stop()


def test_registry_and_manager_metadata():
    with open(os.path.join(REPO_ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)
    comfy = project["tool"]["comfy"]
    assert {"PublisherId", "DisplayName", "Icon", "includes"} <= set(comfy)
    assert project["project"]["urls"]["Repository"] and project["project"]["version"].count(".") == 2
    with open(os.path.join(REPO_ROOT, "registry", "custom-node-list.json")) as f:
        (entry,) = json.load(f)["custom_nodes"]
    assert {"author", "title", "id", "reference", "files", "install_type", "description"} <= set(entry)
    assert entry["install_type"] == "git-clone" and entry["files"] == [project["project"]["urls"]["Repository"]]
    with open(os.path.join(REPO_ROOT, "requirements.txt")) as f:
        assert not [line for line in f if line.strip() and not line.startswith("#") and "torch" in line]
