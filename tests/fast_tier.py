"""The fast tier's promise (no server, no browser), checked where those start: comfy_server.py and browser.py.
conftest.py names the running test in DEADIFF_FAST_TEST when it is marked fast. Imports nothing of the project,
so scripts that borrow browser.py (scripts/render_thumbnails.py) can import it too."""
import os


def refuse_in_fast_tier(what):
    test = os.environ.get("DEADIFF_FAST_TEST")
    if test:
        raise RuntimeError(f"{test} is marked fast but starts {what}; the fast tier runs no server and no browser")
