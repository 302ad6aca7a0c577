"""A headless editor for a test: scripts/browser.py's Browser open on a server. The test fails, saying what
to install, where Chromium or playwright is missing."""
import contextlib

import pytest

from scripts.browser import Browser, chromium_missing_reason


@contextlib.contextmanager
def open_editor(server_url):
    reason = chromium_missing_reason()
    if reason:
        pytest.fail(reason)
    with Browser() as browser:
        yield browser.open(server_url)
