"""The fast tier (-m fast) keeps its promise: a test marked fast that would start a server or a browser fails
at once, naming itself, instead of quietly making the tier slow."""
import os
import re

import pytest

from scripts.browser import Browser
from scripts.comfy_server import ComfyServer

pytestmark = pytest.mark.fast


def test_a_fast_test_is_named_while_it_runs(request):
    assert os.environ["DEADIFF_FAST_TEST"] == request.node.nodeid


@pytest.mark.parametrize("start", [lambda base: ComfyServer("/nonexistent", None, base), lambda _: Browser().__enter__()],
                         ids=["server", "browser"])
def test_a_fast_test_cannot_start_a_server_or_a_browser(request, tmp_path, start):
    with pytest.raises(RuntimeError, match=re.escape(f"{request.node.nodeid} is marked fast but starts a")):
        start(str(tmp_path))
    assert os.listdir(tmp_path) == []  # refused before anything was made
