"""The paired-data manifest: bad rows are named by line and skipped or fatal; paths resolve against
the manifest's folder; images come out at the training and vision sizes."""
import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from deadiff_core.data.dataset import PairImages
from deadiff_core.data.manifest import ManifestError, read_manifest, write_manifest

pytestmark = [pytest.mark.no_comfyui, pytest.mark.fast]  # core code only: ./scripts/test.sh runs it on one runtime


@pytest.fixture
def folder(tmp_path):
    for name, size in (("a.png", (40, 30)), ("b.jpg", (50, 50))):
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "broken.png").write_text("not an image")
    return tmp_path


ROWS = [
    '{"kind": "style", "reference": "a.png", "target": "b.jpg", "caption": "a cat"}',
    '{"kind": "content", "reference": "b.jpg", "target": "a.png", "caption": "  "}',          # 2: empty caption
    '{"kind": "recon", "reference": "a.png", "target": "a.png", "caption": ""}',             # recon: fine
    '{"kind": "style", "reference": "missing.png", "target": "b.jpg", "caption": "x"}',      # 4: missing file
    '{"kind": "style", "reference": "broken.png", "target": "b.jpg", "caption": "x"}',       # 5: unreadable
    '{"kind": "mood", "reference": "a.png", "target": "b.jpg", "caption": "x"}',             # 6: unknown kind
    '{"kind": "style", "reference": "a.png", "caption": "x"}',                               # 7: no target
    '{"kind": "style", "reference": "a.png", "target": "b.jpg", "caption": "x"',             # 8: not JSON
    '',
    '{"kind": "content", "reference": "b.jpg", "target": "a.png", "caption": "watercolor"}',
]


def test_bad_rows_are_skipped_with_their_line_numbers(folder, caplog):
    (folder / "pairs.jsonl").write_text("\n".join(ROWS) + "\n")
    with caplog.at_level(logging.WARNING, logger="deadiff"):
        pairs = read_manifest(str(folder / "pairs.jsonl"))
    assert [(p.kind, p.line) for p in pairs] == [("style", 1), ("recon", 3), ("content", 10)]
    assert pairs[0].reference == str(folder / "a.png") and pairs[0].caption == "a cat"
    warnings = [r.getMessage() for r in caplog.records]
    for line, problem in ((2, "empty caption"), (4, "missing.png does not exist"), (5, "broken.png is not a readable image"),
                          (6, "unknown kind 'mood'"), (7, "missing or non-text field(s) target"), (8, "not valid JSON")):
        assert any(f"line {line}: " in w and problem in w for w in warnings), (line, warnings)


def test_bad_rows_are_fatal_on_request_and_all_are_listed(folder):
    (folder / "pairs.jsonl").write_text("\n".join(ROWS) + "\n")
    with pytest.raises(ManifestError, match="6 bad row") as info:
        read_manifest(str(folder / "pairs.jsonl"), bad_rows="fail")
    assert all(f"line {n}:" in str(info.value) for n in (2, 4, 5, 6, 7, 8))
    (folder / "empty.jsonl").write_text(ROWS[3] + "\n")
    with pytest.raises(ManifestError, match="no usable pairs"):
        read_manifest(str(folder / "empty.jsonl"))


def test_written_manifest_reads_back_and_images_come_at_their_sizes(folder):
    sub = folder / "manifests"
    sub.mkdir()
    write_manifest(str(sub / "pairs.jsonl"), [{"kind": "style", "reference": str(folder / "a.png"),
                                               "target": str(folder / "b.jpg"), "caption": "a dog"}])
    assert json.loads((sub / "pairs.jsonl").read_text())["reference"] == "../a.png"
    (pair,) = read_manifest(str(sub / "pairs.jsonl"))
    item = PairImages([pair], resolution=64, reference_size=28)[0]
    assert item["target"].shape == (64, 64, 3) and item["reference"].shape == (28, 28, 3)
    assert 0 <= item["target"].min() and item["target"].max() <= 1
    # the reference is squashed (docs/DESIGN.md, Encoder), exactly as ComfyUI's clip_preprocess(crop=False) resizes it
    image = torch.from_numpy(np.asarray(Image.open(folder / "a.png"), dtype=np.float32) / 255)
    squashed = torch.nn.functional.interpolate(image.movedim(-1, 0)[None], size=(28, 28), mode="bicubic", antialias=True)
    assert torch.allclose(item["reference"], squashed[0].movedim(0, -1))
