"""Shared fixtures. Tests run against the real ComfyUI runtime named by COMFYUI_PATH
(./scripts/test.sh sets it up and exports it)."""
import os

import pytest
import torch

from deadiff_core.comfy_runtime import import_comfy
from deadiff_core.synthetic import TINY, official_state_dict, save_official_checkpoint
from support.paths import COMFYUI_PATH, REPO_ROOT

RAN_ELSEWHERE = pytest.StashKey()


def pytest_configure(config):
    if not os.path.isfile(os.path.join(COMFYUI_PATH, "main.py")):
        raise pytest.UsageError("COMFYUI_PATH must name a ComfyUI folder; run the suite with ./scripts/test.sh")


def pytest_collection_modifyitems(config, items):
    """./scripts/test.sh sets DEADIFF_NO_COMFYUI_RAN_ON on later runtimes whose environment has the same core
    packages as the first's: tests that run no ComfyUI code would only repeat themselves there."""
    first = os.environ.get("DEADIFF_NO_COMFYUI_RAN_ON")
    once = [item for item in items if first and item.get_closest_marker("no_comfyui")]
    if once:
        config.hook.pytest_deselected(items=once)
        items[:] = [item for item in items if item not in once]
        config.stash[RAN_ELSEWHERE] = (len(once), first)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Names the running test if it is marked fast, for fast_tier.refuse_in_fast_tier: session fixtures start
    inside the setup of the first test that needs them, so a fast test that would start a server is caught."""
    os.environ["DEADIFF_FAST_TEST"] = item.nodeid if item.get_closest_marker("fast") else ""


def pytest_terminal_summary(terminalreporter, config):
    if RAN_ELSEWHERE in config.stash:
        count, first = config.stash[RAN_ELSEWHERE]
        terminalreporter.write_line(f"{count} tests that run no ComfyUI code were deselected: they ran on ComfyUI {first}, "
                                    "with the same torch, transformers and safetensors")


@pytest.fixture(scope="session")
def comfy():
    """The real ComfyUI runtime at COMFYUI_PATH, imported as a library (CPU when there is no GPU)."""
    import_comfy(COMFYUI_PATH)
    import comfy.clip_vision
    return comfy


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: OpenMP's second thread only costs (by orders of magnitude on a busy 2-core box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_state_dict():
    return official_state_dict(TINY)


@pytest.fixture
def tiny_ckpt(tmp_path, tiny_state_dict):
    path = tmp_path / "deadiff_tiny.ckpt"
    save_official_checkpoint(path, tiny_state_dict)
    return path


@pytest.fixture(scope="module")
def deadiff(comfy, official):
    """ComfyUI's DEADiff from the state dict of the module's own `official` fixture."""
    from deadiff_core.checkpoint import adapter_from_state_dict
    from deadiff_core.comfy_adapter import ComfyDEADiff

    return ComfyDEADiff(adapter_from_state_dict(official, "<memory>", "official checkpoint"))


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    """One real ComfyUI server for the whole session (start-up imports every built-in node)."""
    from scripts.comfy_server import ComfyServer

    server = ComfyServer(COMFYUI_PATH, REPO_ROOT, str(tmp_path_factory.mktemp("comfyui_base")))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def server(comfy, comfy_server):
    """The session's server with the files scripts/graphs.py's graph names."""
    from scripts.graphs import install_models

    return install_models(comfy, comfy_server)


@pytest.fixture(scope="module")
def browser(comfy_server):
    """One headless editor (scripts/browser.py) on the session's server, per test module."""
    from support.editor import open_editor

    with open_editor(comfy_server.url) as browser:
        yield browser
