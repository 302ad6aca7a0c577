"""Installed by the real ComfyUI-Manager: ComfyUI 0.33 started with --enable-manager and the comfyui_manager
its manager_requirements.txt pins (4.2.2), offline, with our registry/custom-node-list.json entry as the
Manager's channel (files/reference pointed at a local clone). The install goes through the Manager's HTTP
queue as ComfyUI frontend 1.49's Manager dialog sends it; after a restart every node is listed and the log
has no warning about the pack.

How comfyui_manager 4.2.2 does it (read from its source):
  - its files live in USER_DIR/__manager/ (folder_paths.get_system_user_directory("manager")): config.ini
    (section [default]), channels.list ("name::url" lines; copied from its template when missing) and cache/;
  - the frontend queues {"kind": "install", "ui_id", "client_id", "params": {"id", "repository",
    "channel": "dev", "mode": "cache", "selected_version", "version"}} at POST /v2/manager/queue/task, then
    POST /v2/manager/queue/start; selected_version is "nightly" for a pack the registry calls Unclaimed
    (a git-clone pack known from a channel's custom-node-list.json) and the registry's latest version
    otherwise (a zip from api.comfy.org, which nothing offline can reach);
  - "nightly" looks the id up in the channel's custom-node-list.json, keyed by the last path part of
    `files[0]` (case-insensitively), `git clone`s that URL into custom_nodes/<id> and runs the pack's
    requirements.txt (one `pip install` a line) and install.py;
  - a channel is a URL: https://, or http:// once http_channel_enabled is on (anything else is refused as
    "Invalid channel is used", even when channels.list names it), so the test serves the channel folder
    over http on 127.0.0.1;
  - a pip-installed Manager never reads a channel directly while installing: it reads the channel's cached
    copy in __manager/cache, written at start-up from `channel_url` when network_mode is not "offline" and
    default_cache_as_channel_url is on (otherwise the cache is fetched from the default GitHub channel);
    network_mode "private" does that and skips the Comfy Registry fetch (api.comfy.org);
  - a clone URL must have a scheme and a host (urlparse), so a local clone is named file://localhost/PATH;
  - the install task needs security_level normal (the default), normal- or weak with a loopback --listen;
    "strong" refuses it (logging, misleadingly, that network_mode must be personal_cloud);
  - the 1.49 frontend's Manager dialog lists packs from the Comfy Registry; the channel's list itself is
    what the legacy dialog (--enable-manager-legacy-ui, "Custom Nodes Manager") shows.
"""
import configparser
import functools
import http.server
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import threading
import time
import tomllib
import urllib.error
import urllib.request
import uuid

import pytest

from scripts.comfy_server import PACK_FOLDER_NAME, ComfyServer, pack_log_problems
from scripts.graphs import NODES
from support.paths import COMFYUI_PATH, REPO_ROOT

MANAGER_FILES = os.path.join("user", "__manager")  # under the base directory's user/
# what a channel holds: the Manager's start-up caches every one (a missing one is an error in the log)
CHANNEL_FILES = {"custom-node-list.json": None, "extension-node-map.json": {}, "model-list.json": {"models": []},
                 "alter-list.json": {"items": []}, "github-stats.json": {}}
# the keys every entry of the Manager's own bundled custom-node-list.json carries (4.2.2: all 3587 of them);
# files[0] is cloned, reference keys github-stats, install_type picks clone/copy/unzip, the rest is displayed
MANAGER_ENTRY_KEYS = {"author", "title", "reference", "files", "install_type", "description"}
STARTUP_DONE = "[ComfyUI-Manager] All startup tasks have been completed."


def comfyui_version():
    with open(os.path.join(COMFYUI_PATH, "comfyui_version.py")) as f:
        return re.search(r'__version__ = "(.*)"', f.read()).group(1)


def manager_pin():
    """comfyui_manager's pinned version from this ComfyUI's manager_requirements.txt, or None when it has no
    Manager integration (ComfyUI 0.3.75 has neither the file nor --enable-manager)."""
    path = os.path.join(COMFYUI_PATH, "manager_requirements.txt")
    with open(os.path.join(COMFYUI_PATH, "comfy", "cli_args.py")) as f:
        has_flag = "--enable-manager" in f.read()
    if not (has_flag and os.path.isfile(path)):
        return None
    with open(path) as f:
        return re.search(r"^\s*comfyui[_-]manager\s*==\s*(\S+)", f.read(), re.M | re.I).group(1)


@pytest.fixture(scope="module")
def manager():
    """The comfyui_manager version this ComfyUI pins, installed in this environment (by scripts/setup.sh)."""
    pin = manager_pin()
    if pin is None:
        pytest.skip(f"ComfyUI {comfyui_version()} has no ComfyUI-Manager integration (no --enable-manager in "
                    "comfy/cli_args.py, no manager_requirements.txt): the Manager install is tested on ComfyUI 0.33")
    try:
        installed = importlib.metadata.version("comfyui-manager")
    except importlib.metadata.PackageNotFoundError:
        installed = None
    assert installed == pin, (f"ComfyUI {comfyui_version()} pins comfyui_manager=={pin} in manager_requirements.txt, "
                              f"this environment has {installed}: run ./scripts/setup.sh for this runtime")
    return pin


def registry_entry():
    with open(os.path.join(REPO_ROOT, "registry", "custom-node-list.json")) as f:
        (entry,) = json.load(f)["custom_nodes"]
    return entry


def write_channel(folder, clone_url):
    """A Manager channel in `folder`: our registry entry with files/reference pointed at `clone_url`."""
    os.makedirs(folder, exist_ok=True)
    entry = dict(registry_entry(), files=[clone_url], reference=clone_url)
    for name, content in CHANNEL_FILES.items():
        with open(os.path.join(folder, name), "w") as f:
            json.dump({"custom_nodes": [entry]} if content is None else content, f, indent=2)
    return folder


@pytest.fixture
def channel_server(tmp_path):
    """An http server on 127.0.0.1 for the channel folder tmp_path/channel -> the channel's URL."""
    folder = tmp_path / "channel"
    folder.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(folder))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        yield str(folder), f"http://127.0.0.1:{httpd.server_address[1]}"
        httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def write_manager_config(base_dir, channel, security_level="normal"):
    """config.ini and channels.list in the base directory's user/__manager/, before the server starts.

    security_level "normal" (the Manager's default) is the least permissive that installs: the install task
    needs risk level "middle+", which a loopback --listen grants at normal, normal- and weak; "strong" refuses.
    The channel is an http:// URL (http_channel_enabled; the Manager then logs "Warning: http channel
    enabled", a line not about the pack); both "default" and "dev" (the channel the 1.49 frontend names) map
    to it, and channel_url with default_cache_as_channel_url makes the start-up cache it, the copy the
    install reads.
    """
    folder = os.path.join(base_dir, MANAGER_FILES)
    os.makedirs(folder, exist_ok=True)
    config = configparser.ConfigParser()
    config["default"] = {
        "channel_url": channel,
        "http_channel_enabled": "True",
        "default_cache_as_channel_url": "True",
        "network_mode": "private",  # caches the channel at start-up, never asks api.comfy.org
        "db_mode": "cache",
        "security_level": security_level,
        "use_uv": "False",  # the pack's requirements go through this venv's pip
        "file_logging": "False",
        "update_policy": "stable-comfyui",
    }
    with open(os.path.join(folder, "config.ini"), "w") as f:
        config.write(f)
    with open(os.path.join(folder, "channels.list"), "w") as f:
        f.write(f"default::{channel}\ndev::{channel}\n")


def get_text(server, path):
    try:
        with urllib.request.urlopen(server.url + path, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def post(server, path, payload=None):
    """POST as the frontend's axios client does (JSON body, or none) -> (status, text)."""
    data = b"" if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(server.url + path, data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def tail(log, size=4000):
    """The end of a server log for an assertion message, without git's clone progress bars."""
    return "\n".join(line for line in log.splitlines() if "it/s]" not in line)[-size:]


def wait_for_log(server, line, timeout):
    deadline = time.monotonic() + timeout
    while line not in server.log():
        assert time.monotonic() < deadline, f"no {line!r} in the log within {timeout}s:\n{tail(server.log())}"
        time.sleep(0.25)


def install_through_manager(server, pack_id, repository, timeout=120):
    """Queue and run the install task exactly as frontend 1.49's usePackInstall does for an Unclaimed pack;
    -> the task's history entry once it has completed."""
    ui_id = str(uuid.uuid4())
    task = {"kind": "install", "ui_id": ui_id, "client_id": uuid.uuid4().hex,
            "params": {"id": pack_id, "repository": repository, "channel": "dev", "mode": "cache",
                       "selected_version": "nightly", "version": "nightly"}}
    status, text = post(server, "/v2/manager/queue/task", task)
    assert status == 200, f"queue/task answered {status}: {text}\n{tail(server.log())}"
    status, text = post(server, "/v2/manager/queue/start")
    assert status in (200, 201), f"queue/start answered {status}: {text}\n{tail(server.log())}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = server.get(f"/v2/manager/queue/history?ui_id={ui_id}")["history"]
        if entry and entry.get("status", {}).get("completed"):
            return entry
        time.sleep(0.5)
    raise AssertionError(f"the Manager's install task did not complete within {timeout}s:\n{tail(server.log())}")


def test_the_manager_installs_the_pack_from_our_registry_entry(tmp_path, manager, channel_server):
    source = os.path.join(tmp_path, "source", PACK_FOLDER_NAME)
    subprocess.run(["git", "clone", "--quiet", REPO_ROOT, source], check=True)
    clone_url = "file://localhost" + source  # the Manager's is_valid_url wants a scheme and a host
    base_dir = str(tmp_path / "base")
    os.makedirs(os.path.join(base_dir, "custom_nodes"))
    channel_folder, channel_url = channel_server
    write_channel(channel_folder, clone_url)
    write_manager_config(base_dir, channel_url)
    target = os.path.join(base_dir, "custom_nodes", PACK_FOLDER_NAME)

    server = ComfyServer(COMFYUI_PATH, None, base_dir, extra_args=["--enable-manager"])
    try:
        status, version = get_text(server, "/v2/manager/version")
        assert (status, version) == (200, f"V{manager}"), (
            f"no ComfyUI-Manager {manager} API (GET /v2/manager/version: {status} {version}):\n{tail(server.log())}")
        wait_for_log(server, STARTUP_DONE, 60)  # the channel is cached by now
        entry = install_through_manager(server, PACK_FOLDER_NAME, clone_url)  # the channel's key, and the folder
        install_log = server.log()
    finally:
        server.stop()
    shutil.copy(server.log_path, os.path.join(base_dir, "install.log"))
    assert entry["status"]["status_str"] == "success", (
        f"the Manager's install failed: {entry}\n{tail(install_log)}")
    assert "Installation was successful." in install_log, tail(install_log)
    # offline: the Comfy Registry fetch was skipped, and nothing named another source
    assert "The private comfyregistry is not yet supported" in install_log, tail(install_log)
    assert "api.comfy.org" not in install_log and "githubusercontent" not in install_log, tail(install_log)
    head = subprocess.run(["git", "-C", target, "rev-parse", "HEAD"], capture_output=True, text=True)
    expected = subprocess.run(["git", "-C", source, "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert head.returncode == 0 and head.stdout == expected, f"custom_nodes/{PACK_FOLDER_NAME} is no clone of {source}"
    origin = subprocess.run(["git", "-C", target, "remote", "get-url", "origin"], capture_output=True, text=True).stdout
    assert origin.strip() == clone_url, origin

    server = ComfyServer(COMFYUI_PATH, None, base_dir, extra_args=["--enable-manager"])  # the restart
    try:
        listed = server.get("/object_info")
        log = server.log()
        missing = set(NODES) - set(listed)
        assert not missing, f"after the Manager's install, /object_info lacks {sorted(missing)}:\n{tail(log)}"
        assert not pack_log_problems(log), f"{pack_log_problems(log)}\n{tail(log)}"
        installed = server.get("/v2/customnode/installed")
        assert any(os.path.basename(info.get("aux_id") or info.get("cnr_id") or "").lower() == PACK_FOLDER_NAME.lower()
                   or key.lower() == PACK_FOLDER_NAME.lower() for key, info in installed.items()), installed
    finally:
        server.stop()


@pytest.mark.no_comfyui
def test_registry_entry_has_what_the_manager_reads():
    entry = registry_entry()
    assert MANAGER_ENTRY_KEYS | {"id"} <= set(entry), f"missing {sorted(MANAGER_ENTRY_KEYS | {'id'} - set(entry))}"
    assert entry["install_type"] == "git-clone"
    assert isinstance(entry["files"], list) and len(entry["files"]) == 1, "one git URL: the Manager clones files[0]"
    assert entry["reference"] == entry["files"][0]
    # the Manager's id for a git-clone pack, and the folder it clones into, is the URL's last part
    assert entry["files"][0].rstrip("/").split("/")[-1] == PACK_FOLDER_NAME
    assert entry["files"][0].startswith("https://github.com/") and not entry["files"][0].endswith(".git")
    with open(os.path.join(REPO_ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)
    assert entry["id"] == project["project"]["name"], "the id is the Comfy Registry name (pyproject's name)"
    assert entry["author"] == project["tool"]["comfy"]["PublisherId"]
    assert all(isinstance(entry[key], str) and entry[key].strip() for key in MANAGER_ENTRY_KEYS - {"files"})


def test_registry_entry_has_every_key_the_managers_own_list_carries(manager):
    import importlib.util

    path = os.path.join(os.path.dirname(importlib.util.find_spec("comfyui_manager").origin), "custom-node-list.json")
    with open(path) as f:
        bundled = json.load(f)["custom_nodes"]
    common = set.intersection(*(set(item) for item in bundled))
    assert MANAGER_ENTRY_KEYS <= common, f"comfyui_manager {manager} entries no longer all carry {MANAGER_ENTRY_KEYS - common}"
    assert common <= set(registry_entry()), f"our entry lacks {sorted(common - set(registry_entry()))}"
    types = {item["install_type"] for item in bundled}
    assert registry_entry()["install_type"] in types, types
