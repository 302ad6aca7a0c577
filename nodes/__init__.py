"""The pack's nodes: one node family per module, collected here. A module that fails to import
(a missing optional dependency, a broken edit) is logged by name and skipped, so the rest of the
pack still loads."""
import importlib
import logging

MODULES = ("loader", "encode", "apply", "mix", "token_files")

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for name in MODULES:
    try:
        module = importlib.import_module(f".{name}", __name__)
    except Exception as e:
        logging.warning("[DEADiff] nodes/%s.py could not be imported and its nodes are missing: %s: %s",
                        name, type(e).__name__, e)
        continue
    NODE_CLASS_MAPPINGS.update(module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(module.NODE_DISPLAY_NAME_MAPPINGS)
