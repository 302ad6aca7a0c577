"""A tiny training run's pieces: a manifest of random pairs, a config over deadiff_core.train.tiny's
backbone with a random start, and its Trainer (tests/test_train_loop.py and the tests that start from files)."""
import copy
import json
import os

import numpy as np
from PIL import Image

RANDOM_START = {"source": "random", "proj_hidden": 64,
                "qformer": {"num_layers": 1, "intermediate_size": 64, "vocab_size": 4200, "max_positions": 16}}
TINY_FACTORY = {"factory": "deadiff_core.train.tiny:tiny_backbone"}


def write_pairs(folder, count=6):
    """`count` random images and a manifest with every kind of pair."""
    rng = np.random.default_rng(0)
    os.makedirs(folder, exist_ok=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (80 + 8 * i, 72, 3), dtype=np.uint8)).save(os.path.join(folder, f"img{i}.png"))
    rows = []
    for i in range(count):
        kind = ("style", "content", "recon")[i % 3]
        target = i if kind == "recon" else (i + 1) % count
        rows.append({"kind": kind, "reference": f"img{i}.png", "target": f"img{target}.png", "caption": f"a picture number {i}"})
    path = os.path.join(folder, "pairs.jsonl")
    with open(path, "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    return path


def config_values(manifest, output_dir, **sections):
    values = {"output_dir": str(output_dir), "seed": 3, "precision": "fp32", "log_every": 1, "model": dict(TINY_FACTORY),
              "start": copy.deepcopy(RANDOM_START), "data": {"manifest": manifest, "resolution": 64, "workers": 0},
              "optim": {"lr": 1e-3, "warmup_steps": 2, "batch_size": 2, "max_steps": 3},
              "checkpoint": {"every": 0, "export_dtype": "fp32", "resume": "none"}}
    for name, changes in sections.items():
        if isinstance(values.get(name), dict):
            values[name] = {**values[name], **changes}
        else:
            values[name] = changes
    return values


def make_config(manifest, output_dir, **sections):
    from deadiff_core.train.config import config_from_dict
    return config_from_dict(config_values(manifest, output_dir, **sections), str(output_dir))


def trainer(config, backbone=None):
    from deadiff_core.train.distributed import start_processes
    from deadiff_core.train.trainer import Trainer
    return Trainer(config, start_processes(), backbone)
