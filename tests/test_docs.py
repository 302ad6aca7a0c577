"""The README's layer-routing picture is drawn from the code's layer table; check it shows the
routing of docs/DESIGN.md, Layer map (tests/support/layout_spec.py's SPEC_LAYERS, written out from that table)."""
import subprocess
import sys

import pytest
from PIL import Image

from support.layout_spec import SPEC_LAYERS
from support.paths import REPO_ROOT

pytestmark = [pytest.mark.no_comfyui, pytest.mark.fast]  # core code only: ./scripts/test.sh runs it on one runtime


def test_layer_map_colours_every_layer_by_the_specs_branch(tmp_path):
    from scripts import draw_layer_map

    out, icon = tmp_path / "map.png", tmp_path / "icon.png"
    done = subprocess.run([sys.executable, "-m", "scripts.draw_layer_map", "--out", str(out), "--icon", str(icon)],
                          cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    picture = Image.open(out).convert("RGB")
    assert Image.open(icon).size == (128, 128)
    for index, (_, _, _, branch) in enumerate(SPEC_LAYERS):
        x0, _, _, y1 = draw_layer_map.box(index)
        assert picture.getpixel((int(x0) + 4, y1 - 6)) == draw_layer_map.COLOURS[branch], index
