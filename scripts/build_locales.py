"""Writes locales/en/nodeDefs.json from the node classes, the English source ComfyUI's editor translates
from (GET /i18n serves every pack's locales/<lang>/*.json). Other languages are written by hand and
keyed like this file.

    COMFYUI_PATH=/path/to/ComfyUI .venv/bin/python -m scripts.build_locales          # write
    COMFYUI_PATH=/path/to/ComfyUI .venv/bin/python -m scripts.build_locales --check  # exit 1 if stale

The node modules import ComfyUI (folder_paths, comfy.model_management), so this runs with a ComfyUI on
the path: --comfyui, else the one deadiff_core.comfy_runtime finds (COMFYUI_PATH, the ComfyUI whose
custom_nodes/ holds the pack, the one ./scripts/setup.sh installed).

The layout is the editor's: nodeDefs.<node>.{display_name, description, inputs.<input>.{name, tooltip},
outputs.<index>.{name, tooltip}}.
"""
import argparse
import importlib.util
import json
import os
import sys

from deadiff_core.comfy_runtime import import_comfy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EN_NODE_DEFS = os.path.join(ROOT, "locales", "en", "nodeDefs.json")
PACKAGE = "deadiff_pack_for_locales"


def load_pack(comfyui_path=None):
    """The pack's (NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS), imported as ComfyUI imports a
    custom node folder."""
    import_comfy(comfyui_path)
    module = sys.modules.get(PACKAGE)
    if module is None:
        spec = importlib.util.spec_from_file_location(PACKAGE, os.path.join(ROOT, "__init__.py"),
                                                      submodule_search_locations=[ROOT])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = module
        spec.loader.exec_module(module)
    return module.NODE_CLASS_MAPPINGS, module.NODE_DISPLAY_NAME_MAPPINGS


def node_defs(mappings, display_names):
    """{node: {display_name, description, inputs, outputs}} from the classes, in NODE_CLASS_MAPPINGS order."""
    out = {}
    for name, cls in mappings.items():
        inputs = {}
        for section in ("required", "optional"):
            for input_name, spec in cls.INPUT_TYPES().get(section, {}).items():
                options = spec[1] if len(spec) > 1 else {}
                inputs[input_name] = {"name": input_name, **({"tooltip": options["tooltip"]} if "tooltip" in options else {})}
        output_names = getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)
        tooltips = getattr(cls, "OUTPUT_TOOLTIPS", ())
        outputs = {str(i): {"name": output_name, **({"tooltip": tooltips[i]} if i < len(tooltips) else {})}
                   for i, output_name in enumerate(output_names)}
        entry = {"display_name": display_names.get(name, name), "description": getattr(cls, "DESCRIPTION", ""),
                 "inputs": inputs}
        if outputs:
            entry["outputs"] = outputs
        out[name] = entry
    return out


def render(defs):
    return json.dumps(defs, indent=2, ensure_ascii=False) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when the file is stale")
    parser.add_argument("--comfyui", help="the ComfyUI folder (default: COMFYUI_PATH, else the one ./scripts/setup.sh installed)")
    args = parser.parse_args()
    text = render(node_defs(*load_pack(args.comfyui)))
    current = open(EN_NODE_DEFS, encoding="utf-8").read() if os.path.exists(EN_NODE_DEFS) else None
    if args.check:
        if current != text:
            print(f"{os.path.relpath(EN_NODE_DEFS, ROOT)} is stale: run python -m scripts.build_locales", file=sys.stderr)
            return 1
        return 0
    os.makedirs(os.path.dirname(EN_NODE_DEFS), exist_ok=True)
    with open(EN_NODE_DEFS, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {os.path.relpath(EN_NODE_DEFS, ROOT)} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
