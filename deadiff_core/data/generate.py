"""Render every (subject, style, sample) prompt with an SD checkpoint through ComfyUI's sampler,
in batches, resumably: each image's record (prompt, seed, file) is appended to generated.jsonl
once its PNG is written, and a rerun renders only what has no record and file yet."""
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from tqdm import tqdm

from ..backbone import conditioning
from ..seeds import derived_seed

RECORDS = "generated.jsonl"


@dataclass(frozen=True)
class Render:
    subject: str
    style: str
    sample: int
    prompt: str
    seed: int
    file: str           # relative to the output folder


def _slug(text, limit=40):
    """A readable, collision-proof file name part."""
    readable = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "x"
    return f"{readable}-{hashlib.sha1(text.encode()).hexdigest()[:6]}"


def planned_renders(config):
    """All renders of the config. Seeds come from (seed, subject, style, sample), not from list
    positions, so adding subjects or styles later leaves every earlier image as it was."""
    return [Render(subject, style, sample, config.prompt.format(subject=subject, style=style),
                   derived_seed(config.seed, "render", subject, style, sample) % 2 ** 32,
                   os.path.join("images", f"{_slug(subject)}__{_slug(style)}__{sample}.png"))
            for subject in config.subjects for style in config.styles for sample in range(config.images_per_prompt)]


def read_records(output_dir):
    """{file: Render} of the renders already done (record written and PNG present)."""
    path = os.path.join(output_dir, RECORDS)
    if not os.path.isfile(path):
        return {}
    done = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                render = Render(**json.loads(line))
                if os.path.isfile(os.path.join(output_dir, render.file)):
                    done[render.file] = render
    return done


def _batches(renders, size, clip):
    """Consecutive renders of at most `size` whose prompts encode to the same length (so their
    conditionings stack into one batch), with the stacked [cond, pooled]."""
    batch, conds = [], []
    for render in renders:
        ((cond, extra),) = conditioning(clip, render.prompt)
        if batch and (len(batch) == size or cond.shape != conds[0][0].shape):
            yield batch, conds
            batch, conds = [], []
        batch.append(render)
        conds.append((cond, extra["pooled_output"]))
    if batch:
        yield batch, conds


def render_batch(backbone, sampling, renders, conds, negative):
    """[B, H, W, 3] images in 0..1; row i from renders[i].seed alone (deterministic samplers)."""
    import comfy.sample

    latent = torch.zeros(len(renders), 4, sampling.height // 8, sampling.width // 8)
    noise = torch.cat([comfy.sample.prepare_noise(latent[:1], render.seed) for render in renders])
    positive = [[torch.cat([c for c, _ in conds]), {"pooled_output": torch.cat([p for _, p in conds])}]]
    samples = comfy.sample.sample(backbone.model, noise, sampling.steps, sampling.cfg, sampling.sampler, sampling.scheduler,
                                  positive, negative, latent, seed=renders[0].seed, disable_pbar=True)
    return backbone.vae.decode(samples).clamp(0, 1)


def _save_png(image, path, render):
    info = PngInfo()
    info.add_text("prompt", render.prompt)
    info.add_text("seed", str(render.seed))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray((image.float().cpu().numpy() * 255).round().astype(np.uint8)).save(f"{path}.partial.png", pnginfo=info)
    os.replace(f"{path}.partial.png", path)


def generate_images(config, backbone, progress=True):
    """Render what is missing; returns every Render of the config (done earlier or now)."""
    output_dir = config.path(config.output_dir)
    renders = planned_renders(config)
    done = read_records(output_dir)
    todo = [r for r in renders if r.file not in done]
    if todo:
        negative = conditioning(backbone.clip, config.sampling.negative)
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, RECORDS), "a", encoding="utf-8") as records, \
                tqdm(total=len(todo), unit="image", desc="generating", disable=not progress) as bar:
            for batch, conds in _batches(todo, config.sampling.batch_size, backbone.clip):
                with torch.no_grad():
                    images = render_batch(backbone, config.sampling, batch, conds, negative)
                for render, image in zip(batch, images):
                    _save_png(image, os.path.join(output_dir, render.file), render)
                    records.write(json.dumps(asdict(render), ensure_ascii=False) + "\n")
                records.flush()
                bar.update(len(batch))
    return renders
