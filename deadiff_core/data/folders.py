"""Index an existing image collection: one folder per style. Style pairs are two images of one
folder; reconstruction pairs each image with itself. Folders say nothing about which images share
a subject, so no content pairs come from here.

An image's caption is the text of a sidecar file with the same name and .txt (the usual
convention of captioned data sets), else its file name with _ and - read as spaces.
"""
import os
import random

from ..seeds import derived_seed

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def caption_of(path):
    sidecar = os.path.splitext(path)[0] + ".txt"
    if os.path.isfile(sidecar):
        with open(sidecar, encoding="utf-8") as f:
            return " ".join(f.read().split())
    return " ".join(os.path.splitext(os.path.basename(path))[0].replace("_", " ").replace("-", " ").split())


def style_folders(root):
    """{folder: sorted image paths} for every folder under root that holds images."""
    found = {}
    for folder, _, files in os.walk(root):
        images = sorted(os.path.join(folder, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS))
        if images:
            found[folder] = images
    return dict(sorted(found.items()))


def index_rows(root, per_target=1, seed=0, recon=True):
    rows = []
    for folder, images in style_folders(root).items():
        for target in images:
            others = [image for image in images if image != target]
            rng = random.Random(derived_seed(seed, "folder pair", os.path.relpath(target, root)))
            for reference in rng.sample(others, min(per_target, len(others))):
                rows.append({"kind": "style", "reference": reference, "target": target, "caption": caption_of(target)})
            if recon:
                rows.append({"kind": "recon", "reference": target, "target": target, "caption": caption_of(target)})
    return rows
