"""The paired-data builder end to end on a tiny random SD1.5 through ComfyUI's sampler: prompts,
batched and resumable rendering with recorded seeds, the three kinds of pairs (at random or by a
local CLIP's scores), the folder-tree index, and a manifest the trainer reads."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from deadiff_core.data.manifest import read_manifest
from support.paths import COMFYUI_PATH

SUBJECTS, STYLES = ["a cat", "a lighthouse", "a teapot"], ["watercolor", "pixel art"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def builder_values(output_dir, **changes):
    return {"output_dir": str(output_dir), "subjects": SUBJECTS, "styles": STYLES, "precision": "fp32", "seed": 4,
            "model": {"factory": "deadiff_core.train.tiny:tiny_backbone"},
            "sampling": {"steps": 2, "width": 64, "height": 64, "batch_size": 4}, **changes}


def build(tmp_path, **changes):
    from deadiff_core.data.__main__ import main

    (tmp_path / "builder.json").write_text(json.dumps(builder_values(tmp_path / "out", **changes)))
    assert main(["generate", "--config", str(tmp_path / "builder.json")]) == 0
    return tmp_path / "out"


def records(out):
    with open(out / "generated.jsonl") as f:
        return [json.loads(line) for line in f]


def test_builder_renders_resumes_pairs_and_its_manifest_trains(comfy, tmp_path):
    out = build(tmp_path)
    done = records(out)
    assert sorted((r["subject"], r["style"]) for r in done) == sorted((s, t) for s in SUBJECTS for t in STYLES)
    assert len({r["seed"] for r in done}) == 6 and all(r["prompt"] == f"{r['subject']}, {r['style']}" for r in done)
    by_file = {r["file"]: r for r in done}
    first = Image.open(out / done[0]["file"])
    assert first.size == (64, 64) and first.text == {"prompt": done[0]["prompt"], "seed": str(done[0]["seed"])}

    pairs = read_manifest(str(out / "pairs.jsonl"), bad_rows="fail")
    kinds = [p.kind for p in pairs]
    assert (kinds.count("style"), kinds.count("content"), kinds.count("recon")) == (6, 6, 6)
    for pair in pairs:
        reference, target = (by_file[os.path.relpath(p, out)] for p in (pair.reference, pair.target))
        if pair.kind == "style":
            assert reference["style"] == target["style"] and reference["subject"] != target["subject"]
            assert pair.caption == target["subject"]
        elif pair.kind == "content":
            assert reference["subject"] == target["subject"] and reference["style"] != target["style"]
            assert pair.caption == target["style"]
        else:
            assert reference == target

    # resume: nothing to do; then one lost image, rendered alone from its recorded seed, comes back the same
    pixels = {f: np.asarray(Image.open(out / f), dtype=np.int16) for f in by_file}
    lost = done[3]["file"]
    os.remove(out / lost)
    build(tmp_path)
    assert len(records(out)) == 7 and records(out)[-1] == done[3]
    again = np.asarray(Image.open(out / lost), dtype=np.int16)
    assert np.abs(again - pixels[lost]).max() <= 1  # batch of 4 then of 1: float round-off at most
    assert all(np.array_equal(np.asarray(Image.open(out / f), dtype=np.int16), p) for f, p in pixels.items() if f != lost)

    from support.training import make_config
    from deadiff_core.train.trainer import train
    assert os.path.isfile(train(make_config(str(out / "pairs.jsonl"), tmp_path / "run", optim={"max_steps": 2})))


def tiny_hf_clip(folder):
    """A tiny Hugging Face CLIP folder, as `CLIPModel.from_pretrained` reads a downloaded one."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    torch.manual_seed(0)
    config = CLIPConfig(text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
                        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                       "num_attention_heads": 2, "image_size": 28, "patch_size": 14},
                        projection_dim=16)
    CLIPModel(config).save_pretrained(folder)
    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(COMFYUI_PATH, "comfy", "sd1_tokenizer"))
    processor = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    CLIPProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def test_pairs_chosen_by_clip_scores_are_the_best_candidates(comfy, tmp_path):
    from transformers import CLIPModel, CLIPProcessor

    clip = tiny_hf_clip(str(tmp_path / "clip"))
    out = build(tmp_path, similarity={"clip": clip})
    by_file = {r["file"]: r for r in records(out)}
    # independent scores: the model's full forward (logits = scale x cosine), not the builder's feature calls
    model, processor = CLIPModel.from_pretrained(clip).eval(), CLIPProcessor.from_pretrained(clip)
    files = sorted(by_file)
    texts = SUBJECTS + STYLES
    with torch.no_grad():
        inputs = processor(text=texts, images=[Image.open(out / f).convert("RGB") for f in files], return_tensors="pt", padding=True)
        cosine = model(**inputs).logits_per_image / model.logit_scale.exp()

    def score(kind, file):
        record = by_file[file]
        return cosine[files.index(file), texts.index(record["style"] if kind == "style" else record["subject"])].item()

    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    style_pairs = [p for p in pairs if p["kind"] == "style"]
    assert len(style_pairs) == 6
    for pair in style_pairs:
        target = by_file[pair["target"]]
        candidates = [f for f, r in by_file.items() if r["style"] == target["style"] and r["subject"] != target["subject"]]
        pair_score = lambda f: min(score("style", f), score("style", pair["target"]))  # noqa: E731
        assert pair["reference"] in candidates
        assert pair_score(pair["reference"]) >= max(map(pair_score, candidates)) - 1e-5

    strict = build(tmp_path, similarity={"clip": clip, "min_score": 1.01})  # above any cosine: only reconstructions remain
    assert {json.loads(line)["kind"] for line in (strict / "pairs.jsonl").read_text().splitlines()} == {"recon"}


@pytest.mark.fast
def test_folder_tree_index(tmp_path):
    from deadiff_core.data.__main__ import main

    rng = np.random.default_rng(0)
    for name in ("impressionism/a_field_of_poppies.png", "impressionism/b.png", "cubism/guitar-player.jpg",
                 "cubism/nested/c.png"):
        (tmp_path / "root" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "root" / name)
    (tmp_path / "root" / "impressionism" / "b.txt").write_text("a boat  on the\nSeine\n")
    (tmp_path / "root" / "impressionism" / "notes.md").write_text("not an image")
    assert main(["index", str(tmp_path / "root"), "--manifest", str(tmp_path / "pairs.jsonl"), "--per-target", "3"]) == 0
    pairs = read_manifest(str(tmp_path / "pairs.jsonl"), bad_rows="fail")
    style = {(os.path.basename(p.reference), os.path.basename(p.target), p.caption) for p in pairs if p.kind == "style"}
    assert style == {("b.png", "a_field_of_poppies.png", "a field of poppies"), ("a_field_of_poppies.png", "b.png", "a boat on the Seine")}
    assert sorted(os.path.basename(p.target) for p in pairs if p.kind == "recon") == \
        ["a_field_of_poppies.png", "b.png", "c.png", "guitar-player.jpg"]
    shutil.rmtree(tmp_path / "root")
    os.makedirs(tmp_path / "root")
    assert main(["index", str(tmp_path / "root"), "--manifest", str(tmp_path / "none.jsonl")]) == 2
