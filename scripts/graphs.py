"""The graph a user builds, as an API-format prompt, and the random-weight files it names:
an SD1.5 checkpoint and a DEADiff file with a full ViT-L and a one-layer Q-Former."""
import os

import numpy as np
from PIL import Image

from deadiff_core.synthetic import OfficialLayout, official_state_dict, save_official_checkpoint
from scripts.images import save_reference
from scripts.sd15 import sd15_checkpoint

# the real ViT-L/14 and token width; a one-layer Q-Former keeps the file at about 1.4 GB
E2E_LAYOUT = OfficialLayout(qformer_layers=1, intermediate=256, vocab=4200, positions=16, proj_hidden=256)
CHECKPOINT, DEADIFF, REFERENCE = "sd15_random.safetensors", "deadiff_random.ckpt", "deadiff_style_01.jpeg"
SECOND_REFERENCE = "deadiff_style_03.jpeg"
# DEADiff Apply (Advanced)'s own required inputs at their defaults
ADVANCED = {"style_weight": 1.0, "content_weight": 1.0, "layer_weights": "all", "combine": "average"}
NODES = {"DEADiffLoader": ["DEADIFF"], "DEADiffEncode": ["DEADIFF_TOKENS"], "DEADiffApply": ["MODEL"],
         "DEADiffApplyAdvanced": ["MODEL"], "DEADiffMix": ["DEADIFF_TOKENS"], "DEADiffSaveTokens": [],
         "DEADiffLoadTokens": ["DEADIFF_TOKENS"]}


def install_models(comfy, server, deadiff_layout=E2E_LAYOUT):
    """Put the files the graph names into the server's folders (once per session)."""
    path = server.model_path("checkpoints", CHECKPOINT)
    if not os.path.exists(path):
        sd15_checkpoint(comfy, path, seed=21)
        save_official_checkpoint(server.model_path("deadiff", DEADIFF),
                                 official_state_dict(deadiff_layout, seed=22, with_other_parts=False))
        write_reference(server.input_path(REFERENCE))
        save_reference(server.input_path(SECOND_REFERENCE), "style_03")
    return server


def write_reference(path):
    """The style reference the graphs load: the synthetic 2:3 portrait "style_01" (scripts/images.py)."""
    save_reference(path, "style_01")


def graph(with_deadiff=True, seed=5, apply_node="DEADiffApply", size=128, steps=2, **apply_inputs):
    """Load Checkpoint -> (DEADiff Load/Encode/Apply) -> KSampler (DDIM, CFG 8) -> VAE Decode -> Save."""
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a monkey playing with a banana"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "lowres, blurry"}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "5": {"class_type": "DEADiffLoader", "inputs": {"deadiff_name": DEADIFF}},
        "6": {"class_type": "LoadImage", "inputs": {"image": REFERENCE}},
        "7": {"class_type": "DEADiffEncode", "inputs": {"deadiff": ["5", 0], "image": ["6", 0]}},
        "8": {"class_type": apply_node, "inputs": {"model": ["1", 0], "deadiff": ["5", 0], "tokens": ["7", 0],
                                                   "mode": "style", "weight": 1.0, "start_at": 0.0, "end_at": 1.0,
                                                   **apply_inputs}},
        "9": {"class_type": "KSampler", "inputs": {"model": ["8", 0] if with_deadiff else ["1", 0], "seed": seed,
                                                   "steps": steps, "cfg": 8.0, "sampler_name": "ddim",
                                                   "scheduler": "ddim_uniform", "positive": ["2", 0],
                                                   "negative": ["3", 0], "latent_image": ["4", 0], "denoise": 1.0}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["1", 2]}},
        "11": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "e2e"}},
    }
    if not with_deadiff:
        for node in ("5", "6", "7", "8"):
            del prompt[node]
    return prompt


def advanced_graph(**inputs):
    """graph() through DEADiff Apply (Advanced), its own inputs at their defaults unless given."""
    return graph(apply_node="DEADiffApplyAdvanced", **{**ADVANCED, **inputs})


def per_latent_graph(latents=2):
    """REFERENCE and SECOND_REFERENCE in one image batch, reference i for latent i (combine "per latent")."""
    prompt = advanced_graph(combine="per latent")
    prompt["4"]["inputs"]["batch_size"] = latents
    prompt["30"] = {"class_type": "LoadImage", "inputs": {"image": SECOND_REFERENCE}}
    prompt["31"] = {"class_type": "ImageBatch", "inputs": {"image1": ["6", 0], "image2": ["30", 0]}}
    prompt["7"]["inputs"]["image"] = ["31", 0]
    return prompt


def negative_graph():
    """advanced_graph() with SECOND_REFERENCE as the negative reference."""
    prompt = advanced_graph(negative_tokens=["32", 0])
    prompt["30"] = {"class_type": "LoadImage", "inputs": {"image": SECOND_REFERENCE}}
    prompt["32"] = {"class_type": "DEADiffEncode", "inputs": {"deadiff": ["5", 0], "image": ["30", 0]}}
    return prompt


def saved_images(server, entry):
    """[(file name, pixels)] of what Save Image wrote, one per latent."""
    return [(item["filename"], np.asarray(Image.open(server.output_path(item)), dtype=np.int16))
            for item in entry["outputs"]["11"]["images"]]


def saved_image(server, entry):
    (image,) = saved_images(server, entry)
    return image


def run_ok(server, prompt):
    entry, error = server.run(prompt)
    assert error is None, f"{error}\n{server.log()[-3000:]}"
    return entry


SEEDS = iter(range(100, 300))


def assert_refused(server, prompt, expected):
    """The prompt fails with a node error holding every text in `expected`."""
    entry, error = server.run(prompt)
    assert error is not None, "ran without an error"
    assert "Traceback" not in error and all(text in error for text in expected), error


def assert_still_serving(server):
    good = graph(seed=next(SEEDS))  # a new seed: KSampler really runs again
    _, image = saved_image(server, run_ok(server, good))
    assert image.std() > 0


def assert_refused_and_still_serving(server, prompt, expected):
    assert_refused(server, prompt, expected)
    assert_still_serving(server)
