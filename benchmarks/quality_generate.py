"""Generating the quality harness's images through a running ComfyUI server (its HTTP API only, so the
images come from exactly the runtime, nodes and models a user has)."""
import io
import os
from dataclasses import dataclass

from PIL import Image

from scripts import run_workflow
from scripts.build_workflows import NEGATIVE  # the official inference's negative prompt

UPLOAD_PREFIX = "deadiff_quality_"


@dataclass(frozen=True)
class Method:
    """Plain SD1.5 (mode None), or DEADiff in a mode ("auto": the one the reference's prompt section implies)."""
    mode: str | None = None
    weight: float = 1.0

    @property
    def name(self):
        if self.mode is None:
            return "SD1.5"
        if self.mode == "auto" and self.weight == 1.0:
            return "DEADiff"
        mode = "" if self.mode == "auto" else f" {self.mode}"
        return f"DEADiff{mode} w={self.weight:g}"


def methods(modes, weights, baseline=True):
    return [Method()] * baseline + [Method(mode, weight) for mode in modes for weight in weights]


@dataclass(frozen=True)
class Settings:
    checkpoint: str
    deadiff: str
    size: int = 512
    steps: int = 50
    cfg: float = 7.5
    sampler: str = "ddim"
    scheduler: str = "ddim_uniform"


def graph(settings, case, method, reference_image):
    """The API-format prompt a user would build: Load Checkpoint -> (DEADiff) -> KSampler -> Save Image."""
    prompt = {
        "checkpoint": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": settings.checkpoint}},
        "positive": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["checkpoint", 1], "text": case.prompt.text}},
        "negative": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["checkpoint", 1], "text": NEGATIVE}},
        "latent": {"class_type": "EmptyLatentImage",
                   "inputs": {"width": settings.size, "height": settings.size, "batch_size": 1}},
        "sampler": {"class_type": "KSampler", "inputs": {
            "model": ["checkpoint", 0], "seed": case.prompt.seed, "steps": settings.steps, "cfg": settings.cfg,
            "sampler_name": settings.sampler, "scheduler": settings.scheduler, "positive": ["positive", 0],
            "negative": ["negative", 0], "latent_image": ["latent", 0], "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sampler", 0], "vae": ["checkpoint", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "deadiff_quality"}},
    }
    if method.mode is not None:
        mode = case.default_mode if method.mode == "auto" else method.mode
        prompt.update({
            "deadiff_loader": {"class_type": "DEADiffLoader", "inputs": {"deadiff_name": settings.deadiff}},
            "reference": {"class_type": "LoadImage", "inputs": {"image": reference_image}},
            "encode": {"class_type": "DEADiffEncode", "inputs": {"deadiff": ["deadiff_loader", 0], "image": ["reference", 0]}},
            "apply": {"class_type": "DEADiffApply", "inputs": {
                "model": ["checkpoint", 0], "deadiff": ["deadiff_loader", 0], "tokens": ["encode", 0], "mode": mode,
                "weight": method.weight, "start_at": 0.0, "end_at": 1.0}},
        })
        prompt["sampler"]["inputs"]["model"] = ["apply", 0]
    return prompt


class Generator:
    """Uploads each reference once, runs one graph per (case, method), keeps the image as a PNG in `folder`;
    an image already there is kept (a rerun resumes, or only rescores)."""

    def __init__(self, url, settings, folder):
        self.url, self.settings, self.folder = url.rstrip("/"), settings, folder
        self.uploaded = {}
        os.makedirs(folder, exist_ok=True)

    def image_path(self, case, method):
        name = f"{case.reference_name}__{case.prompt.seed}__{_slug(case.prompt.text)}__{_slug(method.name)}.png"
        return os.path.join(self.folder, name)

    def generate(self, case, method):
        path = self.image_path(case, method)
        if os.path.exists(path):
            return path, False
        entry, error = run_workflow.run(self.url, graph(self.settings, case, method, self._uploaded(case.reference)))
        if error:
            raise SystemExit(f"ComfyUI failed on {os.path.basename(path)}:\n{error}")
        (item,) = [item for items in entry["outputs"]["save"].values() for item in items]
        Image.open(io.BytesIO(run_workflow.download(self.url, item))).save(path)
        return path, True

    def _uploaded(self, reference):
        if reference not in self.uploaded:
            with open(reference, "rb") as f:
                name = UPLOAD_PREFIX + os.path.basename(reference)
                self.uploaded[reference] = run_workflow.upload_image(self.url, name, f.read())
        return self.uploaded[reference]


def _slug(text, length=40):
    return "".join(c if c.isalnum() else "_" for c in text.lower())[:length].strip("_")
