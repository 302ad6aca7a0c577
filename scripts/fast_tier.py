"""The fast tier's promise (no server, no browser), checked where those start: comfy_server.py and browser.py.
tests/conftest.py names the running test in DEADIFF_FAST_TEST when it is marked fast; outside pytest (benchmarks,
scripts/render_thumbnails.py) it is unset and nothing is refused."""
import os


def refuse_in_fast_tier(what):
    test = os.environ.get("DEADIFF_FAST_TEST")
    if test:
        raise RuntimeError(f"{test} is marked fast but starts {what}; the fast tier runs no server and no browser")
