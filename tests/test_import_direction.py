"""The tree imports one way (README, For developers): tests -> benchmarks -> scripts -> deadiff_core, and
nodes -> deadiff_core; inside deadiff_core, data/ and train/ meet only where the trainer reads the data format;
only the ComfyUI bootstrap puts a folder on sys.path. Read from the source, so a new import the wrong way fails
here by file and line."""
import ast
import os

import pytest

from support.paths import REPO_ROOT

pytestmark = [pytest.mark.no_comfyui, pytest.mark.fast]  # reads files only: ./scripts/test.sh runs it on one runtime

# the data format the trainer reads: the manifest and its images
FORMAT_MODULES = {"deadiff_core.data.manifest", "deadiff_core.data.dataset"}
BOOTSTRAP = os.path.join("deadiff_core", "comfy_runtime.py")


def python_files(folder):
    for root, dirs, files in os.walk(os.path.join(REPO_ROOT, folder)):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        yield from (os.path.relpath(os.path.join(root, f), REPO_ROOT) for f in sorted(files) if f.endswith(".py"))


def imports(path):
    """(line, absolute name) of what each import in the file imports: a module, or with `from` the module's
    name (package.module, or module.attribute); relative imports resolved against the file's package."""
    package = os.path.dirname(path).replace(os.sep, ".").split(".")
    with open(os.path.join(REPO_ROOT, path), encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else [])).lstrip(".")
            yield from ((node.lineno, f"{module}.{alias.name}") for alias in node.names)


def offending(folders, forbidden, allowed=()):
    """'path:line module' for each import in `folders` of a module under a `forbidden` prefix, but `allowed`."""
    found = []
    for folder in folders:
        for path in python_files(folder):
            for line, module in imports(path):
                hit = any(module == p or module.startswith(p + ".") for p in forbidden)
                if hit and not any(module == a or module.startswith(a + ".") for a in allowed):
                    found.append(f"{path}:{line} {module}")
    return found


def test_the_developer_tree_imports_one_way():
    assert offending(["benchmarks"], ["tests", "support"]) == []
    assert offending(["scripts"], ["tests", "support", "benchmarks"]) == []
    assert offending(["deadiff_core"], ["tests", "support", "benchmarks", "scripts", "nodes"]) == []


def test_data_and_train_meet_only_at_the_data_format():
    assert offending([os.path.join("deadiff_core", "data")], ["deadiff_core.train"]) == []
    assert offending([os.path.join("deadiff_core", "train")], ["deadiff_core.data"], FORMAT_MODULES) == []


def test_only_the_comfyui_bootstrap_changes_sys_path():
    changes = []
    for folder in ("deadiff_core", "nodes", "scripts", "benchmarks", "tests"):
        for path in python_files(folder):
            with open(os.path.join(REPO_ROOT, path), encoding="utf-8") as f:
                tree = ast.parse(f.read(), path)
            changes += [f"{path}:{node.lineno}" for node in ast.walk(tree)
                        if isinstance(node, ast.Attribute) and node.attr == "path"
                        and isinstance(node.value, ast.Name) and node.value.id == "sys" and path != BOOTSTRAP]
    assert changes == []
