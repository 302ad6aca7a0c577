"""Manifest pairs as tensors: the target at the training resolution, the reference at the vision
model's input size, both ComfyUI IMAGE rows ([H, W, 3] floats in 0..1)."""
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def load_rgb(path):
    with Image.open(path) as image:
        return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)


def resize_and_centre_crop(image, size):
    """[H, W, 3] -> [size, size, 3]: shorter side to `size` (bicubic, antialiased), centre crop."""
    height, width = image.shape[:2]
    scale = size / min(height, width)
    resized = F.interpolate(image.movedim(-1, 0)[None], size=(max(size, round(height * scale)), max(size, round(width * scale))),
                            mode="bicubic", antialias=True)[0].movedim(0, -1)
    top, left = (resized.shape[0] - size) // 2, (resized.shape[1] - size) // 2
    return resized[top:top + size, left:left + size].clamp(0, 1)


def squash(image, size):
    """[H, W, 3] -> [size, size, 3] without keeping the aspect ratio: exactly the resize ComfyUI's
    clip_preprocess(crop=False) applies at inference (docs/DESIGN.md, Encoder), so references batch at one size."""
    resized = F.interpolate(image.movedim(-1, 0)[None], size=(size, size), mode="bicubic", antialias=True)
    return resized[0].movedim(0, -1)


class PairImages(torch.utils.data.Dataset):
    def __init__(self, pairs, resolution, reference_size):
        self.pairs = pairs
        self.resolution = resolution
        self.reference_size = reference_size

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, index):
        pair = self.pairs[index]
        try:
            target = load_rgb(pair.target)
            reference = target if pair.reference == pair.target else load_rgb(pair.reference)
        except OSError as e:
            raise OSError(f"manifest line {pair.line}: {e}") from e
        return {"index": index, "target": resize_and_centre_crop(target, self.resolution),
                "reference": squash(reference, self.reference_size)}
