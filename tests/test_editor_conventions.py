"""The conventions ComfyUI's editor, the Comfy Registry and comfy-cli read from a pack, checked where they are
read: node search aliases (SEARCH_ALIASES -> /object_info -> the editor's node search), help pages
(web/docs/<node>.md -> /extensions/<pack>/docs/ -> the editor's node info panel), translations
(locales/<lang>/nodeDefs.json -> /i18n -> the editor), pyproject.toml (as ComfyUI's own comfy_config parser
reads it) and .comfyignore (as `comfy node publish` applies it: the pack must still load from what ships).

What the two tested runtimes do differs (see each test): ComfyUI 0.3.75's server sends no search_aliases and
its frontend 1.32 searches names only, and drops custom nodes' translations for non-English locales; ComfyUI
0.33.0 with frontend 1.49 does both."""
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import tomllib
import struct
import urllib.error
import urllib.request

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from scripts import build_locales
from scripts.browser import Browser
from scripts.comfy_server import PACK_FOLDER_NAME, ComfyServer
from scripts.graphs import NODES
from support.paths import COMFYUI_PATH, REPO_ROOT

ARTIFACTS = os.path.join(REPO_ROOT, "tests", "artifacts")
DOCS = os.path.join(REPO_ROOT, "web", "docs")
LOCALES = os.path.join(REPO_ROOT, "locales")
PYTHON_MODULE = f"custom_nodes.{PACK_FOLDER_NAME}"


def _version(path, pattern):
    with open(path) as f:
        return Version(re.search(pattern, f.read(), re.M).group(1))


COMFYUI_VERSION = _version(os.path.join(COMFYUI_PATH, "comfyui_version.py"), r'^__version__ = "(.*)"') \
    if COMFYUI_PATH else None
FRONTEND_VERSION = Version(importlib.metadata.version("comfyui-frontend-package"))
# measured on the tested runtimes: 0.3.75's node_info has no search_aliases, 0.33.0's has; frontend 1.32 searches
# name and display_name only and re-loads a non-English locale over custom nodes' translations, 1.49 does neither
SERVER_SENDS_ALIASES = COMFYUI_VERSION is not None and COMFYUI_VERSION >= Version("0.33.0")
FRONTEND_SEARCHES_ALIASES = FRONTEND_VERSION >= Version("1.49")
FRONTEND_KEEPS_CUSTOM_TRANSLATIONS = FRONTEND_VERSION >= Version("1.49")


def fetch(url):
    """GET -> (status, content type, body bytes), for files rather than JSON."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read()


def read_json(*parts):
    with open(os.path.join(*parts), encoding="utf-8") as f:
        return json.load(f)


def pyproject():
    with open(os.path.join(REPO_ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


@pytest.fixture(scope="module")
def pack(comfy):
    """The pack's (NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS), imported with the real ComfyUI."""
    return build_locales.load_pack(COMFYUI_PATH)


@pytest.fixture(scope="module")
def our_object_info(comfy_server):
    info = {name: node for name, node in comfy_server.get("/object_info").items() if node["python_module"] == PYTHON_MODULE}
    assert set(info) == set(NODES)
    return info


# ---------------------------------------------------------------- search aliases

def test_every_node_has_search_aliases_and_the_server_sends_what_it_supports(pack, our_object_info):
    mappings, display_names = pack
    for name, cls in mappings.items():
        aliases = cls.SEARCH_ALIASES
        assert len(aliases) >= 3 and all(isinstance(a, str) and a == a.strip().lower() and a for a in aliases), name
        assert len(set(aliases)) == len(aliases), name
        # aliases that only repeat the display name would add nothing to the search
        assert [a for a in aliases if a not in display_names[name].lower()], name
    for name, info in our_object_info.items():
        if SERVER_SENDS_ALIASES:
            assert info["search_aliases"] == mappings[name].SEARCH_ALIASES, name
        else:
            assert "search_aliases" not in info, (COMFYUI_VERSION, name)


def _search(browser, query):
    """Type `query` into the editor's node search box (as double-clicking the canvas opens it) and return the
    node types its results show, in order (by their display names)."""
    box = browser.page.locator("input[role=combobox], input[placeholder='Search Nodes...']").first
    box.fill(query)
    browser.page.wait_for_timeout(1000)  # debounced
    rows = browser.evaluate("""() => [...document.querySelectorAll('[role=option]')]
        .filter((el) => el.offsetParent).map((el) => el.innerText.trim())""")
    titles = browser.evaluate("""() => Object.fromEntries(Object.entries(window.LiteGraph.registered_node_types)
        .map(([type, cls]) => [type, cls.title ?? type]))""")
    found = []
    for row in rows:
        matches = [t for t, title in titles.items() if row.startswith(title)]
        if matches:
            found.append(max(matches, key=lambda t: len(titles[t])))
    return found


def test_the_editors_node_search_finds_our_nodes_by_alias(browser, pack):
    mappings, _ = pack
    browser.new_graph()
    browser.dismiss_toasts()
    browser.evaluate("async () => await window.app.extensionManager.command.execute('Workspace.SearchBox.Toggle')")
    browser.page.locator("input[role=combobox], input[placeholder='Search Nodes...']").first.wait_for()
    try:
        # the search box itself works: our display names find every node
        assert set(NODES) <= set(_search(browser, "DEADiff"))
        for alias in ("image prompt", "style mixing", "reuse reference"):
            expected = {name for name, cls in mappings.items() if alias in cls.SEARCH_ALIASES}
            assert expected and not [n for n in expected if alias in mappings[n].__name__.lower()]
            ours = {t for t in _search(browser, alias) if t in NODES}
            if FRONTEND_SEARCHES_ALIASES:
                assert ours == expected, alias
            else:
                assert ours == set(), (FRONTEND_VERSION, alias)  # 1.32 matches names and display names only
        browser.screenshot(os.path.join(ARTIFACTS, "search_by_alias.png"))
    finally:
        browser.page.keyboard.press("Escape")


# ---------------------------------------------------------------- help pages

def test_every_node_has_a_help_page_naming_its_inputs_and_outputs(our_object_info):
    for name, info in our_object_info.items():
        with open(os.path.join(DOCS, f"{name}.md"), encoding="utf-8") as f:
            page = f.read()
        assert page.startswith(f"# {info['display_name']}\n"), name
        inputs = [i for section in ("required", "optional") for i in info["input"].get(section, {})]
        if name == "DEADiffApplyAdvanced":  # refers to DEADiff Apply's page for the shared inputs
            inputs = [i for i in inputs if i not in our_object_info["DEADiffApply"]["input"]["required"]]
        if name == "DEADiffMix":  # tokens_1 ... ratio_4 are written as ranges
            inputs = ["tokens_1", "tokens_2", "tokens_3", "tokens_4", "ratio_1", "ratio_4"]
        assert [i for i in inputs if f"**{i}**" not in page] == [], name
        assert [o for o in info["output_name"] if f"**{o}**" not in page] == [], name
        for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page):
            assert not image.startswith(("/", "http")) and os.path.isfile(os.path.join(DOCS, image)), (name, image)
    assert sorted(f[:-3] for f in os.listdir(DOCS) if f.endswith(".md")) == sorted(our_object_info)


def test_the_server_serves_help_pages_where_the_editor_looks(comfy_server, our_object_info):
    # the frontend's NodeHelpService: /extensions/<pack>/docs/<node>/<locale>.md, then /extensions/<pack>/docs/<node>.md
    base = f"{comfy_server.url}/extensions/{PACK_FOLDER_NAME}/docs"
    for name in our_object_info:
        assert fetch(f"{base}/{name}/en.md")[0] == 404
        status, content_type, body = fetch(f"{base}/{name}.md")
        assert status == 200 and "text/html" not in content_type  # the editor takes an HTML answer for "not found"
        with open(os.path.join(DOCS, f"{name}.md"), "rb") as f:
            assert body == f.read()
    status, content_type, _ = fetch(f"{base}/layer_map.png")
    assert status == 200 and content_type == "image/png"


def test_the_node_info_panel_shows_our_help_page_with_its_picture(comfy_server):
    with Browser(settings={"Comfy.Canvas.SelectionToolbox": True}) as browser:
        browser.open(comfy_server.url)
        browser.new_graph_with("DEADiffApply", (200, 200))
        browser.evaluate("""() => { const ds = window.app.canvas.ds;       // clear of the top bar, for the toolbox
            ds.offset[0] += 300; ds.offset[1] += 300; window.app.canvas.setDirty(true, true); }""")
        browser.click_graph(260, 190)  # the title bar: selects the node, the selection toolbox appears
        browser.page.locator("[data-testid=info-button]").click()
        panel = browser.page.locator(".node-help-content").first
        panel.get_by_text("Gives an SD1.x model a reference's look").wait_for()
        images = browser.evaluate("""async () => {
            const images = [...document.querySelector('.node-help-content').querySelectorAll('img')];
            await Promise.all(images.map((img) => img.decode().catch(() => null)));
            return images.map((img) => [new URL(img.src).pathname, img.naturalWidth]);
        }""")
        with open(os.path.join(DOCS, "layer_map.png"), "rb") as f:
            (width,) = struct.unpack(">I", f.read(24)[16:20])  # PNG IHDR
        assert images == [[f"/extensions/{PACK_FOLDER_NAME}/docs/layer_map.png", width]]
        assert panel.locator("h2").all_inner_texts()[:2] == ["Inputs", "Output"]
        browser.screenshot(os.path.join(ARTIFACTS, "help_page.png"))


# ---------------------------------------------------------------- locales

@pytest.mark.fast
def test_en_node_defs_are_what_the_script_generates(pack):
    with open(os.path.join(LOCALES, "en", "nodeDefs.json"), encoding="utf-8") as f:
        assert f.read() == build_locales.render(build_locales.node_defs(*pack)), \
            "locales/en/nodeDefs.json is stale: run python -m scripts.build_locales"


def test_en_node_defs_equal_what_the_server_sends(our_object_info):
    en = read_json(LOCALES, "en", "nodeDefs.json")
    assert list(en) == list(NODES)
    for name, info in our_object_info.items():
        assert en[name]["display_name"] == info["display_name"] and en[name]["description"] == info["description"]
        sent = {**info["input"]["required"], **info["input"].get("optional", {})}
        assert list(en[name]["inputs"]) == [i for s in ("required", "optional") for i in info["input"].get(s, {})]
        assert {i: e.get("tooltip") for i, e in en[name]["inputs"].items()} == {i: s[1].get("tooltip") for i, s in sent.items()}
        outputs = en[name].get("outputs", {})
        assert [outputs[str(i)]["name"] for i in range(len(outputs))] == list(info["output_name"])
        assert [outputs[str(i)]["tooltip"] for i in range(len(outputs))] == list(info.get("output_tooltips", []))


def _keys(tree, prefix=""):
    keys = set()
    for key, value in tree.items():
        keys.add(prefix + key)
        if isinstance(value, dict):
            keys |= _keys(value, f"{prefix}{key}.")
    return keys


def _strings(tree):
    for value in tree.values():
        yield from _strings(value) if isinstance(value, dict) else [value]


@pytest.mark.no_comfyui
@pytest.mark.fast
def test_zh_translates_every_en_string():
    en, zh = read_json(LOCALES, "en", "nodeDefs.json"), read_json(LOCALES, "zh", "nodeDefs.json")
    assert _keys(zh) == _keys(en)
    assert all(isinstance(s, str) and s.strip() for s in _strings(zh))
    cjk = re.compile(r"[\u4e00-\u9fff]")
    for name, node in zh.items():
        texts = [node["display_name"], node["description"], *(i["tooltip"] for i in node["inputs"].values()),
                 *(o["tooltip"] for o in node.get("outputs", {}).values())]
        assert [t for t in texts if not cjk.search(t)] == [], name
    assert sorted(os.listdir(LOCALES)) == ["en", "zh"]


def test_i18n_serves_our_translations(comfy_server):
    served = comfy_server.get("/i18n")
    for lang in ("en", "zh"):
        ours = read_json(LOCALES, lang, "nodeDefs.json")
        assert {name: served[lang]["nodeDefs"][name] for name in ours} == ours, lang


def test_the_editor_shows_our_chinese_names(comfy_server):
    zh = read_json(LOCALES, "zh", "nodeDefs.json")["DEADiffApplyAdvanced"]
    try:
        with Browser(settings={"Comfy.Locale": "zh"}) as browser:
            browser.open(comfy_server.url)
            browser.new_graph()
            node = browser.add_node("DEADiffApplyAdvanced", (0, 0))
            shown = browser.evaluate("""(id) => { const node = window.app.graph.getNodeById(id);
                return {title: node.title, widgets: Object.fromEntries(node.widgets.filter((w) => w.label).map((w) => [w.name, w.label])),
                        core: node.outputs[0].localized_name}; }""", node)
            assert shown["core"] == "模型"  # the editor runs in Chinese (its own translation of MODEL)
            if FRONTEND_KEEPS_CUSTOM_TRANSLATIONS:
                assert shown["title"] == zh["display_name"]
                assert shown["widgets"]["layer_weights"] == zh["inputs"]["layer_weights"]["name"]
                browser.show_nodes([node])
                browser.screenshot(os.path.join(ARTIFACTS, "locale_zh.png"))
            else:  # frontend 1.32 loads zh after merging /i18n, over it: English stays
                assert shown["title"] == "DEADiff Apply (Advanced)", FRONTEND_VERSION
    finally:  # settings are the server's, per user: later browsers must open in English
        request = urllib.request.Request(f"{comfy_server.url}/settings/Comfy.Locale", method="POST", data=b'"en"',
                                         headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=30).close()


# ---------------------------------------------------------------- pyproject.toml

@pytest.mark.no_comfyui
@pytest.mark.fast
def test_pyproject_has_what_the_registry_reads():
    project = pyproject()
    urls = project["project"]["urls"]
    assert set(urls) == {"Repository", "Documentation", "Issues"}  # the Registry's names; no "Bug Tracker"
    assert urls["Issues"] == urls["Repository"] + "/issues"
    assert {"Operating System :: OS Independent", "Environment :: GPU :: NVIDIA CUDA"} <= set(project["project"]["classifiers"])
    comfy = project["tool"]["comfy"]
    assert Version("0.3.75") in SpecifierSet(comfy["requires-comfyui"])  # the oldest tested runtime
    assert Version("0.3.74") not in SpecifierSet(comfy["requires-comfyui"])
    assert comfy["includes"] == ["web", "example_workflows", "locales"]
    assert "workflows" not in comfy["includes"]


@pytest.mark.no_comfyui
@pytest.mark.fast
def test_requires_python_is_the_oldest_python_the_code_runs_on():
    """tomllib (deadiff_core.data, .train) is Python 3.11's."""
    users = subprocess.run(["git", "grep", "-l", "-E", r"^\s*(import tomllib|from tomllib)", "--", "*.py"], cwd=REPO_ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    assert [u for u in users if u.startswith("deadiff_core/")]
    specifier = SpecifierSet(pyproject()["project"]["requires-python"])
    assert Version("3.10") not in specifier and Version("3.11") in specifier


@pytest.mark.fast
def test_comfyuis_own_parser_reads_our_pyproject(comfy):
    """comfy_config, which ComfyUI (and the Registry's tooling) use to read a pack's pyproject.toml."""
    from comfy_config import config_parser

    config = config_parser.extract_node_configuration(REPO_ROOT)
    urls = pyproject()["project"]["urls"]
    assert config.project.urls.issues == urls["Issues"] and config.project.urls.repository == urls["Repository"]
    assert config.project.supported_os == ["OS Independent"]
    assert config.project.supported_accelerators == ["GPU :: NVIDIA CUDA"]
    assert config.project.supported_comfyui_version == ">=0.3.75"
    assert COMFYUI_VERSION in SpecifierSet(config.project.supported_comfyui_version)  # this runtime is supported
    assert config.tool_comfy.includes == ["web", "example_workflows", "locales"]
    assert config.tool_comfy.web is None  # web/ is served through WEB_DIRECTORY, under the folder's name


# ---------------------------------------------------------------- .comfyignore

def shipped_files(tmp_path):
    """The files `comfy node publish` puts into the archive (comfy-cli's file_utils.zip_files): `git ls-files`
    minus what .comfyignore's gitignore patterns match, except under [tool.comfy] includes, whose folders are
    added from disk whole. The patterns are matched by git itself, in an empty repository of their own (so
    this repository's .gitignore plays no part)."""
    matcher = tmp_path / "comfyignore_matcher"
    subprocess.run(["git", "init", "-q", str(matcher)], check=True)
    shutil.copy(os.path.join(REPO_ROOT, ".comfyignore"), matcher / ".git" / "info" / "exclude")
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.split("\n")
    tracked = [p for p in tracked if p and os.path.isfile(os.path.join(REPO_ROOT, p))]  # moved away, not yet committed
    result = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=matcher, input="\n".join(tracked),
                            capture_output=True, text=True)
    assert result.returncode in (0, 1), result.stderr  # 1: nothing ignored
    ignored = set(result.stdout.split())
    includes = pyproject()["tool"]["comfy"]["includes"]
    under_includes = lambda p: any(p == i or p.startswith(i + "/") for i in includes)  # noqa: E731
    shipped = {p for p in tracked if p not in ignored or under_includes(p)}
    for include in includes:
        for root, dirs, files in os.walk(os.path.join(REPO_ROOT, include)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            shipped |= {os.path.relpath(os.path.join(root, f), REPO_ROOT) for f in files if not f.endswith(".pyc")}
    return shipped, ignored


@pytest.mark.fast
def test_comfyignore_leaves_out_the_developers_tree(tmp_path):
    shipped, ignored = shipped_files(tmp_path)
    for folder in ("tests/", "benchmarks/", ".ci/", "deadiff_core/train/", "deadiff_core/data/", "registry/"):
        assert not [p for p in shipped if p.startswith(folder)], folder
        assert [p for p in ignored if p.startswith(folder)], folder  # the pattern matched something real
    assert "scripts/run_workflow.py" in shipped  # README's headless runner, for users
    assert not [p for p in shipped if p.startswith("scripts/") and p != "scripts/run_workflow.py"]
    for needed in ("__init__.py", "pyproject.toml", "README.md", "requirements.txt", "web/deadiff.js",
                   "web/docs/DEADiffApply.md", "web/docs/layer_map.png", "locales/en/nodeDefs.json",
                   "locales/zh/nodeDefs.json", "deadiff_core/convert.py"):
        assert needed in shipped, needed


def test_the_pack_loads_from_what_ships(tmp_path):
    """Only the shipped files, in a fresh ComfyUI's custom_nodes: every node, its help pages and translations."""
    shipped, _ = shipped_files(tmp_path)
    pack = tmp_path / "base" / "custom_nodes" / PACK_FOLDER_NAME
    for path in shipped:
        os.makedirs(pack / os.path.dirname(path), exist_ok=True)
        shutil.copy2(os.path.join(REPO_ROOT, path), pack / path)
    assert not (pack / "deadiff_core" / "train").exists() and not (pack / "tests").exists()
    server = ComfyServer(COMFYUI_PATH, None, str(tmp_path / "base"))
    try:
        listed = server.get("/object_info")
        assert {n for n, info in listed.items() if info["python_module"] == PYTHON_MODULE} == set(NODES)
        pack_lines = [line for line in server.log().splitlines() if PACK_FOLDER_NAME in line or "deadiff" in line.lower()]
        assert not [line for line in pack_lines if "IMPORT FAILED" in line or "Traceback" in line or "WARNING" in line]
        assert set(read_json(LOCALES, "zh", "nodeDefs.json")) <= set(server.get("/i18n")["zh"]["nodeDefs"])
        assert fetch(f"{server.url}/extensions/{PACK_FOLDER_NAME}/docs/DEADiffLoader.md")[0] == 200
    finally:
        server.stop()
