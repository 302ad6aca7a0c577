"""The paired-data manifest: one JSON object per line,

    {"kind": "style", "reference": "images/a.png", "target": "images/b.png", "caption": "a cat"}

kind: style (same style, different subject), content (same subject, different style) or recon
(reference = target). Image paths are relative to the manifest's folder. A recon row's caption is
not used (the trainer's text is "" for it, docs/DESIGN.md, Training) and may be empty.
"""
import json
import logging
import os
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

KINDS = ("style", "content", "recon")
FIELDS = ("kind", "reference", "target", "caption")
log = logging.getLogger("deadiff")


@dataclass(frozen=True)
class Pair:
    kind: str
    reference: str      # absolute path
    target: str         # absolute path
    caption: str
    line: int           # 1-based line in the manifest, for messages


@dataclass(frozen=True)
class BadRow:
    line: int
    problem: str

    def __str__(self):
        return f"line {self.line}: {self.problem}"


class ManifestError(ValueError):
    pass


def _readable(path, cache):
    """None if PIL can open and verify the image, else what is wrong (checked once per path)."""
    if path not in cache:
        if not os.path.isfile(path):
            cache[path] = f"{path} does not exist"
        else:
            try:
                with Image.open(path) as image:
                    image.verify()
                cache[path] = None
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
                cache[path] = f"{path} is not a readable image ({type(e).__name__}: {e})"
    return cache[path]


def _parse(text, line, base, checked):
    try:
        row = json.loads(text)
    except json.JSONDecodeError as e:
        return None, f"not valid JSON ({e.msg})"
    if not isinstance(row, dict):
        return None, "not a JSON object"
    missing = [name for name in FIELDS if not isinstance(row.get(name), str)]
    if missing:
        return None, f"missing or non-text field(s) {', '.join(missing)}"
    if row["kind"] not in KINDS:
        return None, f"unknown kind {row['kind']!r} (use {', '.join(KINDS)})"
    if row["kind"] != "recon" and not row["caption"].strip():
        return None, "empty caption"
    paths = [os.path.normpath(os.path.join(base, row[name])) for name in ("reference", "target")]
    for path in paths:
        problem = _readable(path, checked)
        if problem:
            return None, problem
    return Pair(row["kind"], *paths, row["caption"].strip(), line), None


def read_manifest(path, bad_rows="skip"):
    """The manifest's usable pairs. Bad rows are logged with their line number and skipped, or
    (bad_rows="fail") raise ManifestError listing all of them."""
    base = os.path.dirname(os.path.abspath(path))
    pairs, bad, checked = [], [], {}
    with open(path, encoding="utf-8") as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            pair, problem = _parse(text, line, base, checked)
            if problem:
                bad.append(BadRow(line, problem))
            else:
                pairs.append(pair)
    if bad and bad_rows == "fail":
        listing = "\n  ".join(map(str, bad[:50])) + (f"\n  ... and {len(bad) - 50} more" if len(bad) > 50 else "")
        raise ManifestError(f"{path}: {len(bad)} bad row(s):\n  {listing}")
    for row in bad:
        log.warning("%s: skipping %s", path, row)
    if not pairs:
        raise ManifestError(f"{path}: no usable pairs")
    return pairs


def write_manifest(path, rows):
    """rows: dicts with FIELDS; image paths are written relative to the manifest's folder."""
    base = os.path.dirname(os.path.abspath(path))
    partial = f"{path}.partial"
    with open(partial, "w", encoding="utf-8") as f:
        for row in rows:
            row = dict(row)
            for name in ("reference", "target"):
                row[name] = os.path.relpath(os.path.abspath(row[name]), base)
            f.write(json.dumps({name: row[name] for name in FIELDS}, ensure_ascii=False) + "\n")
    os.replace(partial, path)

