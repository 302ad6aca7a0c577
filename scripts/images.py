"""Deterministic synthetic reference images, so that no test needs pictures from outside the repository.

Each name gives the same picture on every run. The pictures are smooth (low-frequency colour waves plus a few
soft blobs), so resampling kernels agree closely, yet they vary across the whole frame, so a crop, a flip or a
squash changes them visibly. Sizes follow the pictures the tests were first written with: "style_01" is a 2:3
portrait, "content_01" a 3:2 landscape, the others a mix."""
import zlib

import numpy as np
from PIL import Image

SIZES = {"style_01": (512, 768), "style_02": (720, 400), "style_03": (640, 512), "style_04": (400, 600),
         "content_01": (768, 512)}


def reference_pixels(name="style_01", size=None):
    """uint8 array (height, width, 3) for NAME ("style_01" or "style_01.jpeg"); SIZE (width, height) overrides."""
    stem = name.split(".")[0]
    width, height = size or SIZES.get(stem, (512, 512))
    rng = np.random.default_rng(zlib.crc32(stem.encode()))
    y, x = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    image = np.zeros((height, width, 3))
    for channel in range(3):
        for _ in range(3):
            fx, fy = rng.uniform(0.5, 3, size=2)
            phase = rng.uniform(0, 2 * np.pi)
            image[..., channel] += np.sin(2 * np.pi * (fx * x + fy * y) + phase)
    for _ in range(4):  # soft blobs: structure that is neither periodic nor symmetric
        cx, cy, radius = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.08, 0.25)
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius ** 2))
        image += blob[..., None] * rng.uniform(-2, 2, size=3)
    image -= image.min()
    return (255 * image / image.max()).round().astype(np.uint8)


def reference_image(name="style_01", size=None):
    """The synthetic reference NAME as an RGB PIL image."""
    return Image.fromarray(reference_pixels(name, size), "RGB")


def save_reference(path, name="style_01", size=None):
    """Write the synthetic reference NAME to PATH (the format follows the file's extension)."""
    reference_image(name, size).save(path)
