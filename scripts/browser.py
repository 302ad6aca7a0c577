"""The real ComfyUI front end in a headless Chromium (Debian's /usr/bin/chromium, driven by
Python playwright; ./scripts/setup.sh installs both), for tests that need the editor itself:
extensions, widgets, UI-format workflows and their conversion to API prompts.

    with Browser() as browser:                     # several may be open at once
        browser.open(server.url)                   # e.g. the session's comfy_server fixture
        browser.load_workflow(f"{REPO_ROOT}/example_workflows/some.json")  # UI format: a path or a dict
        assert browser.toasts() == []              # the editor's schema/link checks had nothing to say
        prompt = browser.graph_to_prompt()         # what Run would queue: {id: {class_type, inputs}}
        assert browser.extension_errors("ComfyUI-DEADiff", ["DEADiff.UI"]) == []
        browser.screenshot(f"{REPO_ROOT}/tests/artifacts/some.png")  # git-ignored

Everything goes through the page's own `app` (window.app), as a user's editor would: no
frontend internals are imported or patched.
"""
import json
import os
import shutil
import time
import urllib.request

from scripts.fast_tier import refuse_in_fast_tier

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

# A fresh ComfyUI user dir would open on the first-run template browser; skip it, keep the minimap
# off the canvas, and use the classic canvas renderer (the default) unless a test asks for Nodes 2.0.
# Settings live on the server, per user: every open() sets these again, so one test's choice does not
# leak into the next browser.
QUIET_SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Minimap.Visible": False,
    "Comfy.VueNodes.Enabled": False,
}
# localStorage flags the editor keeps per browser rather than per user
QUIET_LOCAL_STORAGE = {"vueNodesBannerDismissed": "true"}


def chromium_missing_reason():
    """Why a browser test cannot run here, or None."""
    if not (os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM}: run ./scripts/setup.sh (it installs Debian's chromium) or set CHROMIUM"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "Python playwright is not installed: run ./scripts/setup.sh"
    return None


class ConsoleMessage:
    def __init__(self, kind, text, url):
        self.kind, self.text, self.url = kind, text, url

    def mentions(self, needle):
        needle = needle.lower()
        return needle in self.text.lower() or needle in (self.url or "").lower()

    def __repr__(self):
        return f"[{self.kind}] {self.text} ({self.url})"


class _Chromium:
    """One playwright driver and one Chromium process per executable, shared by every open Browser
    (playwright's sync API allows one driver per thread); each Browser has its own context (own
    storage, own page)."""
    _running = {}

    def __init__(self, executable_path):
        from playwright.sync_api import sync_playwright

        self.executable_path = executable_path
        self.users = 0
        self.playwright = sync_playwright().start()
        try:
            self.browser = self.playwright.chromium.launch(
                executable_path=executable_path, headless=True,
                args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        except BaseException:
            self.playwright.stop()
            raise

    @classmethod
    def acquire(cls, executable_path):
        chromium = cls._running.get(executable_path) or cls(executable_path)
        cls._running[executable_path] = chromium
        chromium.users += 1
        return chromium

    def release(self):
        self.users -= 1
        if self.users == 0:
            del self._running[self.executable_path]
            try:
                self.browser.close()
            finally:
                self.playwright.stop()


class Browser:
    """A headless Chromium page on a ComfyUI server. Use as a context manager."""

    def __init__(self, executable_path=CHROMIUM, viewport=(1600, 1000), timeout_s=120, settings=None):
        self.executable_path = executable_path
        self.viewport = viewport
        self.timeout_ms = int(timeout_s * 1000)
        self.settings = {**QUIET_SETTINGS, **(settings or {})}
        self.messages = []
        self.page = None
        self.url = None

    # ---------------------------------------------------------------- life cycle

    def __enter__(self):
        refuse_in_fast_tier("a browser")
        self._chromium = _Chromium.acquire(self.executable_path)
        try:
            self._context = self._chromium.browser.new_context(
                viewport={"width": self.viewport[0], "height": self.viewport[1]}, device_scale_factor=1)
            self._context.add_init_script(
                "".join(f"localStorage.setItem({json.dumps(k)}, {json.dumps(v)});" for k, v in QUIET_LOCAL_STORAGE.items()))
            self._context.set_default_timeout(self.timeout_ms)
            self.page = self._context.new_page()
            self.page.on("console", self._on_console)
            self.page.on("pageerror", lambda error: self.messages.append(
                ConsoleMessage("pageerror", f"{error.name}: {error.message}\n{error.stack or ''}", "")))
        except BaseException:
            self._chromium.release()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.page is None:
            return
        try:
            self._context.close()
        finally:
            self.page = None
            self._chromium.release()

    def _on_console(self, message):
        self.messages.append(ConsoleMessage(message.type, message.text, message.location.get("url", "")))

    # ---------------------------------------------------------------- opening the editor

    def open(self, server_url):
        """Open the editor on `server_url` and wait until it is ready: extensions loaded, node types
        registered, the start-up workflow restored (so it cannot replace one loaded afterwards)."""
        self.url = server_url.rstrip("/")
        for key, value in self.settings.items():
            request = urllib.request.Request(f"{self.url}/settings/{urllib.request.quote(key)}", method="POST",
                                             data=json.dumps(value).encode(), headers={"Content-Type": "application/json"})
            urllib.request.urlopen(request, timeout=30).close()
        self.page.goto(self.url + "/")
        self.page.wait_for_function(
            "() => window.app?.graph && window.app.canvas && Object.keys(window.LiteGraph?.registered_node_types ?? {}).length > 0")
        self.page.wait_for_load_state("networkidle")
        self.page.wait_for_function("() => !window.app.configuringGraph")
        return self

    def reload(self):
        return self.open(self.url)

    # ---------------------------------------------------------------- the page's app

    def evaluate(self, script, arg=None):
        """Run a JS function expression in the page (awaited if async) and return its JSON result."""
        return self.page.evaluate(script, arg)

    def load_workflow(self, workflow, name="test workflow"):
        """Load a UI-format workflow (a dict, or the path of a .json file) as the editor's current graph,
        as opening the file would. Returns the node types in it. Missing-node and missing-model dialogs
        are not shown; what the editor's validation says about the file is in toasts() afterwards."""
        if not isinstance(workflow, dict):
            with open(workflow) as f:
                workflow = json.load(f)
        if "nodes" not in workflow:
            raise ValueError("not a UI-format workflow (no 'nodes'); API-format prompts are run as they are")
        self.dismiss_toasts()
        return self.evaluate("""async ([workflow, name]) => {
            await window.app.loadGraphData(workflow, true, true, name,
                                           {showMissingNodesDialog: false, showMissingModelsDialog: false});
            return window.app.graph.nodes.map((node) => node.type);
        }""", [workflow, name])

    def graph_to_prompt(self):
        """The API-format prompt the editor would queue for its current graph ({node id: {class_type, inputs}})."""
        return self.evaluate("async () => (await window.app.graphToPrompt()).output")

    def serialize(self):
        """The current graph as a UI-format workflow, as Save writes it (through JSON, so unset fields
        are left out rather than turned into nulls the editor's schema would refuse)."""
        return json.loads(self.evaluate("() => JSON.stringify(window.app.graph.serialize())"))

    def toasts(self):
        """The notifications on screen: [{"severity": "warn", "text": ...}, ...]. Loading a workflow the
        editor finds fault with (schema errors, broken links) shows them here."""
        self.page.wait_for_timeout(200)  # rendered on the next frames
        return self.evaluate("""() => [...document.querySelectorAll(".p-toast-message")].map((el) => ({
            severity: ([...el.classList].find((c) => /^p-toast-message-(success|info|warn|error|secondary|contrast)$/.test(c))
                       ?? "").replace("p-toast-message-", ""),
            text: el.innerText.trim(),
        }))""")

    def dismiss_toasts(self):
        self.evaluate("""() => document.querySelectorAll(".p-toast-message .p-toast-close-button")
                                .forEach((button) => button.click())""")
        self.page.wait_for_function("() => !document.querySelector('.p-toast-message')", timeout=10000)

    def new_graph(self):
        """Empty the current graph (like starting a blank workflow)."""
        self.evaluate("() => { window.app.clean(); window.app.graph.clear(); window.app.canvas.setDirty(true, true); }")

    def new_graph_with(self, node_type, pos=(100, 100)):
        """Empty the graph, add one `node_type` node at `pos` and bring it into view; returns its id."""
        self.new_graph()
        node = self.add_node(node_type, pos)
        self.show_nodes([node])
        return node

    def add_node(self, node_type, pos=(100, 100), widgets=None):
        """Add a node of `node_type` at graph position `pos`, optionally setting widget values by name.
        Returns its id as a number, as saved workflows hold it (frontend 1.49 keeps ids as strings in
        the page, 1.32 as numbers; the page's look-ups take either)."""
        return self.evaluate("""([type, pos, widgets]) => {
            const node = window.LiteGraph.createNode(type);
            if (!node) throw new Error(`unknown node type ${type}`);
            node.pos = pos;
            window.app.graph.add(node);
            for (const [name, value] of Object.entries(widgets ?? {})) {
                const widget = node.widgets?.find((w) => w.name === name);
                if (!widget) throw new Error(`${type} has no widget ${name}`);
                widget.value = value;
            }
            window.app.graph.setDirtyCanvas(true, true);
            return Number(node.id);
        }""", [node_type, list(pos), widgets])

    def connect(self, from_id, output, to_id, input):
        """Link an output (index or name) of one node to an input (index or name) of another."""
        self.evaluate("""([fromId, output, toId, input]) => {
            const source = window.app.graph.getNodeById(fromId), target = window.app.graph.getNodeById(toId);
            const out = typeof output === "number" ? output : source.outputs.findIndex((o) => o.name === output);
            const inp = typeof input === "number" ? input : target.inputs.findIndex((i) => i.name === input);
            if (out < 0 || inp < 0) throw new Error(`no slot ${output} -> ${input}`);
            if (!source.connect(out, target, inp)) throw new Error(`could not link ${fromId}.${output} -> ${toId}.${input}`);
        }""", [from_id, output, to_id, input])

    def widget_values(self, node_id):
        """{widget name: value} of a node, as the editor holds them."""
        return self.evaluate("""(id) => Object.fromEntries(
            window.app.graph.getNodeById(id).widgets.map((w) => [w.name, w.value]))""", node_id)

    def queue(self, timeout_s=300):
        """Queue the current graph from the page (so this page receives the execution events, as after
        pressing Run) and wait for it to finish. Returns the prompt's /history entry."""
        prompt_id = self.evaluate("""async () => {
            const response = await window.comfyAPI.api.api.queuePrompt(0, await window.app.graphToPrompt());
            return response.prompt_id;
        }""")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"{self.url}/history/{prompt_id}", timeout=30) as response:
                history = json.loads(response.read())
            if prompt_id in history:
                return history[prompt_id]
            time.sleep(0.25)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout_s}s")

    # ---------------------------------------------------------------- the canvas, as a user sees it

    def show_nodes(self, node_ids, zoom=1.0):
        """Pan and zoom the canvas so the given nodes' top-left corner sits near the view's top-left."""
        self.evaluate("""([ids, zoom]) => {
            const nodes = ids.map((id) => window.app.graph.getNodeById(id));
            const left = Math.min(...nodes.map((n) => n.pos[0])), top = Math.min(...nodes.map((n) => n.pos[1]));
            const ds = window.app.canvas.ds;
            ds.scale = zoom;
            ds.offset[0] = -left + 80 / zoom;
            ds.offset[1] = -top + 120 / zoom;
            window.app.canvas.setDirty(true, true);
            window.app.canvas.draw(true, true);
        }""", [list(node_ids), zoom])
        self.page.wait_for_timeout(100)

    def node_element(self, node_id):
        """A node's element in the Nodes 2.0 (Vue nodes) renderer, as a playwright locator."""
        return self.page.locator(f'[data-node-id="{node_id}"]')

    def page_point(self, graph_x, graph_y):
        """A graph position as page (viewport) coordinates, for real mouse events."""
        return tuple(self.evaluate("""([x, y]) => {
            const canvas = window.app.canvas;
            const [cx, cy] = canvas.ds.convertOffsetToCanvas([x, y]);
            const rect = canvas.canvas.getBoundingClientRect();
            return [rect.left + cx, rect.top + cy];
        }""", [graph_x, graph_y]))

    def click_graph(self, graph_x, graph_y):
        x, y = self.page_point(graph_x, graph_y)
        self.page.mouse.click(x, y)
        self.redraw()

    def drag_graph(self, start, end, steps=12):
        """Press at graph position `start`, move to `end` in steps, release."""
        (x0, y0), (x1, y1) = self.page_point(*start), self.page_point(*end)
        mouse = self.page.mouse
        mouse.move(x0, y0)
        mouse.down()
        for i in range(1, steps + 1):
            mouse.move(x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps)
            self.page.wait_for_timeout(15)
        mouse.up()
        self.redraw()

    def redraw(self):
        self.evaluate("() => { window.app.canvas.setDirty(true, true); window.app.canvas.draw(true, true); }")

    def pixel(self, graph_x, graph_y):
        """The (r, g, b) the canvas shows at a graph position."""
        x, y = self.page_point(graph_x, graph_y)
        return tuple(self.evaluate("""([x, y]) => {
            const canvas = window.app.canvas.canvas, rect = canvas.getBoundingClientRect();
            const scale = canvas.width / rect.width;
            const data = canvas.getContext("2d").getImageData(Math.round((x - rect.left) * scale),
                                                              Math.round((y - rect.top) * scale), 1, 1).data;
            return [data[0], data[1], data[2]];
        }""", [x, y]))

    def screenshot(self, path):
        """Save what the page shows (the mouse is first parked off the canvas, so no tooltip covers it)."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.page.mouse.move(self.viewport[0] - 2, self.viewport[1] // 2)
        self.redraw()
        self.page.wait_for_timeout(300)
        self.page.screenshot(path=path)
        return path

    # ---------------------------------------------------------------- what the page logged

    def console_errors(self, mentioning=None):
        """Console errors and uncaught exceptions so far, optionally only those whose text, stack or
        source mentions `mentioning` (a string or a tuple of strings, case-insensitive)."""
        needles = (mentioning,) if isinstance(mentioning, str) else mentioning
        errors = [m for m in self.messages if m.kind in ("error", "pageerror")]
        return [m for m in errors if needles is None or any(m.mentions(n) for n in needles)]

    def extension_errors(self, pack_folder, extension_names=()):
        """Errors raised by a pack's front end: from its files under /extensions/<pack_folder>/ (load
        failures, exceptions whose stack passes through them) or naming its registered extensions
        ("Error calling extension 'name' ..."). Not the editor's own messages about the pack's nodes
        (e.g. its blocked look-ups of node names on api.comfy.org)."""
        return self.console_errors((f"/extensions/{pack_folder}/", *(f"'{name}'" for name in extension_names),
                                    *extension_names))
