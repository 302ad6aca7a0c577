"""The per-GPU memory estimate of docs/TRAINING.md: parameter counts against the key list in
docs/DESIGN.md, Checkpoint, and SD1.5's known size, activations that grow with the batch, and the documented table kept in step."""
import math
import os
import re

import pytest

from support.layout_spec import spec_adapter_keys, spec_image_projection_keys, spec_vision_keys
from support.paths import REPO_ROOT

GiB = 2 ** 30


@pytest.fixture(scope="module")
def estimates(comfy):
    from deadiff_core.train.memory import estimate
    return {batch: estimate(batch=batch) for batch in (1, 8)}


def test_parameter_counts_are_the_real_models(estimates):
    frozen, trainable, *_ = estimates[1]
    assert frozen["UNet"] == 859_520_964  # SD1.5's UNet, as every SD1.5 checkpoint holds it
    spec = {**spec_adapter_keys("style"), **spec_adapter_keys("content"), **spec_image_projection_keys()}
    trained = {k: s for k, s in spec.items() if "ln_vision" not in k and not k.endswith("position_ids")}
    assert trainable == sum(math.prod(s) for s in trained.values())
    assert frozen["vision tower (ViT-L, 23 blocks)"] == sum(math.prod(s) for s in spec_vision_keys("style").values())


def test_activations_grow_with_the_batch_and_checkpointing_cuts_them(estimates):
    (*_, one, one_checkpointed), (*_, eight, eight_checkpointed) = estimates[1], estimates[8]
    assert 7.5 < eight / one < 8.5 and one_checkpointed < one / 2 and eight_checkpointed < eight / 2


def test_the_documented_table_is_what_the_estimate_gives(estimates):
    with open(os.path.join(REPO_ROOT, "docs", "TRAINING.md")) as f:
        doc = f.read()
    _, _, rows, activations, checkpointed = estimates[8]
    table = dict(re.findall(r"^\| (total[^|]*?) \| [^|]+ \| [^|]+ \| ([\d.]+) \|", doc, re.M))  # the batch-8 column
    assert float(table["total (DDP)"]) == round((sum(rows.values()) + activations) / GiB, 1)
    assert float(table["total, gradient checkpointing"]) == round((sum(rows.values()) + checkpointed) / GiB, 1)
