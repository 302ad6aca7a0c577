#!/usr/bin/env python3
"""Renders the thumbnail of each example workflow from the real editor: opens example_workflows/<name>.json in
ComfyUI's front end (a headless Chromium through scripts/browser.py, on a running server with this pack loaded),
hides the editor's menus (focus mode), fits the whole graph into the view and saves the canvas as
example_workflows/<name>.jpg, the name the editor's template browser asks the server for
(/api/workflow_templates/<pack folder>/<name>.jpg; custom-node templates are always .jpg there).

    python -m scripts.render_thumbnails --url http://127.0.0.1:8188 [--folder example_workflows] [--out DIR]

The committed thumbnails are rendered on the reference runtime (build_workflows.REFERENCE_COMFYUI, frontend
1.32): square, SIZE px (the template browser shows square cards; ComfyUI's own templates are 350-400 px),
JPEG quality QUALITY (about 10 KB each), on a server with no model or input files (the graph as a user
first sees it; Load Image would otherwise show a preview), as tests/test_example_workflows.py renders them
again to compare.
"""
import argparse
import glob
import io
import json
import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDER = os.path.join(REPO_ROOT, "example_workflows")
SIZE = 400
QUALITY = 85
# the view the graph is fitted into before it is scaled down to SIZE (large enough for text to stay readable
# when the editor draws it, small enough that the nodes are not lost when scaled down)
VIEW = 1200
MARGIN = 0.04
# the editor's own settings for a picture of the graph: full detail at any zoom (no level-of-detail boxes),
# no canvas statistics, no zoom controls
SETTINGS = {"LiteGraph.Canvas.MinFontSizeForLOD": 0, "Comfy.Graph.CanvasInfo": False, "Comfy.Graph.CanvasMenu": False}


def _browser_module():
    from scripts import browser  # the project's own driver of the real editor (needs playwright)

    return browser


def render(page_browser, workflow, name):
    """The editor's view of a workflow, fitted to a square: a PIL image SIZE x SIZE."""
    from PIL import Image

    # loadGraphData as opening the file does, without the missing-model notices (1.32: dialogs; 1.49: the
    # error overlay), which would cover the canvas: the thumbnail shows the graph, not this machine's folders
    page_browser.evaluate("""async ([workflow, name]) => {
        await window.app.loadGraphData(workflow, true, true, name,
                                       {showMissingNodesDialog: false, showMissingModelsDialog: false,
                                        silentAssetErrors: true});
    }""", [workflow, name])
    page_browser.page.wait_for_timeout(300)
    page_browser.dismiss_toasts()
    page_browser.evaluate("""(margin) => {
        const canvas = window.app.canvas, nodes = window.app.graph.nodes;
        const title = window.LiteGraph.NODE_TITLE_HEIGHT;
        const left = Math.min(...nodes.map((n) => n.pos[0])), top = Math.min(...nodes.map((n) => n.pos[1] - title));
        const right = Math.max(...nodes.map((n) => n.pos[0] + n.size[0]));
        const bottom = Math.max(...nodes.map((n) => n.pos[1] + n.size[1]));
        const rect = canvas.canvas.getBoundingClientRect();
        const side = Math.min(rect.width, rect.height) * (1 - 2 * margin);
        const scale = side / Math.max(right - left, bottom - top);
        canvas.ds.scale = scale;
        canvas.ds.offset[0] = rect.width / 2 / scale - (left + right) / 2;
        canvas.ds.offset[1] = rect.height / 2 / scale - (top + bottom) / 2;
        canvas.deselectAll?.();
        canvas.setDirty(true, true);
        canvas.draw(true, true);
    }""", MARGIN)
    page_browser.page.mouse.move(2, 2)
    page_browser.page.wait_for_timeout(500)  # DOM widgets (text boxes) follow the canvas on the next frames
    page_browser.redraw()
    box = page_browser.page.locator("canvas#graph-canvas").bounding_box()
    side = min(box["width"], box["height"])
    clip = {"x": box["x"] + (box["width"] - side) / 2, "y": box["y"] + (box["height"] - side) / 2,
            "width": side, "height": side}
    shot = Image.open(io.BytesIO(page_browser.page.screenshot(clip=clip))).convert("RGB")
    return shot.resize((SIZE, SIZE), Image.LANCZOS)


def render_all(url, folder=FOLDER, out=None):
    """Render every <folder>/*.json into <out or folder>/<name>.jpg; returns the paths written."""
    browser = _browser_module()
    reason = browser.chromium_missing_reason()
    if reason:
        raise RuntimeError(reason)
    out = out or folder
    os.makedirs(out, exist_ok=True)
    written = []
    with browser.Browser(viewport=(VIEW, VIEW), settings=SETTINGS) as page_browser:
        page_browser.open(url)
        page_browser.evaluate("() => window.app.extensionManager.command.execute('Workspace.ToggleFocusMode')")
        # focus mode leaves one button over the canvas: the one that leaves focus mode
        page_browser.page.add_style_tag(content=".comfy-menu-hamburger { visibility: hidden !important; }")
        page_browser.page.wait_for_timeout(300)
        for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
            name = os.path.basename(path)[:-5]
            with open(path) as f:
                workflow = json.load(f)
            target = os.path.join(out, f"{name}.jpg")
            render(page_browser, workflow, f"{name}.json").save(target, "JPEG", quality=QUALITY, optimize=True)
            written.append(target)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8188")
    parser.add_argument("--folder", default=FOLDER, help="where the workflows are")
    parser.add_argument("--out", default=None, help="where the thumbnails go (default: next to the workflows)")
    args = parser.parse_args(argv)
    for path in render_all(args.url, args.folder, args.out):
        print(f"wrote {os.path.relpath(path)} ({os.path.getsize(path) // 1024} KB)")


if __name__ == "__main__":
    main()
