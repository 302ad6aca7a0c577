"""benchmarks/quality.py end to end: a real ComfyUI server generates with random SD1.5 and DEADiff weights, and
tiny random metric models (a transformers CLIP, an OpenAI-layout CSD, a LAION-layout aesthetic head) score the
images. The numbers mean nothing; every score is recomputed here by an independent path."""
import argparse
import csv
import os
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from scripts.comfy_server import free_port
from scripts.graphs import CHECKPOINT, DEADIFF
from scripts.images import save_reference
from support.paths import COMFYUI_PATH, REPO_ROOT

SIZE = 64  # generated images, references and both metric ViTs' input: no resizing anywhere
CLIP_MEAN, CLIP_STD = np.array([0.48145466, 0.4578275, 0.40821073]), np.array([0.26862954, 0.26130258, 0.27577711])
PROMPTS = "# a test set\n[style]\na monkey playing with a banana_11\na palm tree_12\n[content]\npencil drawing\n"


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class OpenAIBlock(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, width // 64, batch_first=True)
        self.mlp = nn.Sequential(OrderedDict(c_fc=nn.Linear(width, 4 * width), gelu=QuickGELU(),
                                             c_proj=nn.Linear(4 * width, width)))

    def forward(self, x):
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class OpenAIViT(nn.Module):
    """The vision tower as OpenAI's clip/model.py lays it out (CSD's backbone), returning ln_post(class token)."""

    def __init__(self, width=128, layers=2, patch=16):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, patch, patch, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width) * 0.2)
        self.positional_embedding = nn.Parameter(torch.randn((SIZE // patch) ** 2 + 1, width) * 0.2)
        self.ln_pre, self.ln_post = nn.LayerNorm(width), nn.LayerNorm(width)
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.Sequential(*[OpenAIBlock(width) for _ in range(layers)])
        with torch.no_grad():
            for p in self.parameters():
                p.add_(torch.randn_like(p) * 0.05)  # norms away from 1/0 too

    def forward(self, pixels):
        x = self.conv1(pixels).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_embedding.expand(len(x), 1, -1), x], dim=1) + self.positional_embedding
        return self.ln_post(self.transformer.resblocks(self.ln_pre(x))[:, 0])


def pixels(paths):
    """CLIP's normalisation written out (the images are already the models' input size)."""
    arrays = [(np.asarray(Image.open(p).convert("RGB"), dtype=np.float64) / 255 - CLIP_MEAN) / CLIP_STD for p in paths]
    return torch.tensor(np.stack(arrays), dtype=torch.float32).permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def metric_weights(tmp_path_factory):
    """A tiny CLIP folder (ComfyUI's SD1 tokenizer files), a CSD checkpoint and an aesthetic head."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("metrics")
    tokenizer = os.path.join(COMFYUI_PATH, "comfy", "sd1_tokenizer")
    config = CLIPConfig(text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, max_position_embeddings=77),
                        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                           num_attention_heads=2, image_size=SIZE, patch_size=16),
                        projection_dim=768)
    CLIPModel(config).save_pretrained(folder / "clip")
    CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE}),
                  tokenizer=CLIPTokenizer(f"{tokenizer}/vocab.json", f"{tokenizer}/merges.txt")).save_pretrained(folder / "clip")
    backbone, style_head = OpenAIViT(), torch.randn(128, 768) / 128 ** 0.5
    checkpoint = {f"module.backbone.{k}": v for k, v in backbone.state_dict().items()}
    checkpoint.update({"module.last_layer_style": style_head, "module.last_layer_content": torch.randn(128, 768)})
    torch.save({"model_state_dict": checkpoint, "epoch": 3, "args": argparse.Namespace(lr=1e-4)}, folder / "csd.pth")
    head = nn.Sequential(nn.Linear(768, 1024), nn.Dropout(), nn.Linear(1024, 128), nn.Dropout(), nn.Linear(128, 64),
                         nn.Dropout(), nn.Linear(64, 16), nn.Linear(16, 1))
    torch.save({f"layers.{k}": v for k, v in head.state_dict().items()}, folder / "aesthetic.pth")
    return {"clip": str(folder / "clip"), "csd": str(folder / "csd.pth"), "aesthetic": str(folder / "aesthetic.pth"),
            "backbone": backbone, "style_head": style_head, "head": head}


@pytest.fixture(scope="module")
def reference_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("references")
    for stem in ("style_01", "content_01"):
        save_reference(folder / f"{stem}.png", stem, size=(SIZE, SIZE))
    (folder / "prompts.txt").write_text(PROMPTS)
    return folder


def quality(*args):
    result = subprocess.run([sys.executable, "-m", "benchmarks.quality", *args], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_quality_harness_generates_scores_and_reports(server, metric_weights, reference_set, tmp_path):
    from transformers import CLIPModel, CLIPProcessor

    out = tmp_path / "results"
    args = ["--url", server.url, "--checkpoint", CHECKPOINT, "--deadiff", DEADIFF, "--references", str(reference_set),
            "--seed", "7", "--weights", "0.5", "1.0", "--size", str(SIZE), "--steps", "1", "--out", str(out),
            "--clip", metric_weights["clip"], "--csd", metric_weights["csd"], "--aesthetic", metric_weights["aesthetic"]]
    printed = quality(*args)
    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    methods = ["SD1.5", "DEADiff w=0.5", "DEADiff"]
    assert [(r["reference"], r["prompt"], r["seed"], r["method"]) for r in rows] == [
        *[("content_01.png", "pencil drawing", "7", m) for m in methods],
        *[("style_01.png", p, s, m) for p, s in (("a monkey playing with a banana", "11"), ("a palm tree", "12"))
          for m in methods]]
    assert [r["mode"] for r in rows] == ["", "content", "content"] + ["", "style", "style"] * 2
    images = {(r["prompt"], r["method"]): np.asarray(Image.open(out / "images" / r["image"]), dtype=np.int16) for r in rows}
    assert {image.shape for image in images.values()} == {(SIZE, SIZE, 3)}
    palm = {m: images[("a palm tree", m)] for m in methods}
    assert np.abs(palm["DEADiff"] - palm["SD1.5"]).mean() > 1 and np.abs(palm["DEADiff"] - palm["DEADiff w=0.5"]).mean() > 0.1

    clip = CLIPModel.from_pretrained(metric_weights["clip"]).eval()
    tokens = CLIPProcessor.from_pretrained(metric_weights["clip"]).tokenizer
    with torch.no_grad():
        for r in rows:
            paths = [out / "images" / r["image"], reference_set / r["reference"]]
            both = clip(**tokens([r["prompt"]], return_tensors="pt"), pixel_values=pixels(paths))
            style = nn.functional.normalize(metric_weights["backbone"](pixels(paths)) @ metric_weights["style_head"], dim=-1)
            expected = {"text_alignment": both.logits_per_image[0, 0] / clip.logit_scale.exp(),
                        "style_clip": both.image_embeds[0] @ both.image_embeds[1],
                        "style_csd": style[0] @ style[1],
                        "aesthetic": metric_weights["head"].eval()(both.image_embeds[0])[0]}
            for name, value in expected.items():
                assert float(r[name]) == pytest.approx(float(value), abs=2e-4), (name, r["image"])

    summary = (out / "summary.md").read_text()
    assert summary in printed
    for section, count in (("style", 2), ("content", 1)):
        block = summary.split(f"{section} references")[1].split("\n\n", 2)[1]
        means = {line.split("|")[1].strip(): line for line in block.splitlines()[2:]}
        assert list(means) == methods and all(f"| {count} |" in line for line in means.values())
    ta = np.mean([float(r["text_alignment"]) for r in rows if r["method"] == "DEADiff" and r["section"] == "style"])
    assert f"| DEADiff | 2 | {ta:.3f} |" in summary
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.size == (4 * 160, 16 + 3 * (14 + 160))

    rerun = quality(*args[:-6], "--skip-metrics")
    assert rerun.count(" kept ") == 9 and " generated " not in rerun


def run_main(*argv):
    from benchmarks import quality

    return quality.main(list(argv))


def test_quality_harness_refuses_missing_or_wrong_metric_weights(metric_weights, reference_set, tmp_path, capsys):
    references = ("--references", str(reference_set))  # the default set (../shared) need not exist
    with pytest.raises(SystemExit) as stopped:
        run_main(*references, "--out", str(tmp_path))
    assert stopped.value.code == 2 and "pass --clip DIR" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="not a transformers CLIP folder"):
        run_main(*references, "--clip", str(tmp_path / "nowhere"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(SystemExit, match="--csd .*junk.pth: not readable as PyTorch weights"):
        run_main(*references, "--clip", metric_weights["clip"], "--csd", str(junk))
    with pytest.raises(SystemExit, match="not a CSD checkpoint"):
        run_main(*references, "--clip", metric_weights["clip"], "--csd", metric_weights["aesthetic"])
    narrow = nn.Sequential(nn.Linear(512, 1024), nn.Dropout(), nn.Linear(1024, 128), nn.Dropout(), nn.Linear(128, 64),
                           nn.Dropout(), nn.Linear(64, 16), nn.Linear(16, 1))
    torch.save({f"layers.{k}": v for k, v in narrow.state_dict().items()}, tmp_path / "narrow.pth")
    with pytest.raises(SystemExit, match="reads 512-wide CLIP embeddings but the --clip model gives 768-wide"):
        run_main(*references, "--clip", metric_weights["clip"], "--aesthetic", str(tmp_path / "narrow.pth"))


def test_quality_harness_explains_an_unreachable_server_and_unpaired_references(reference_set, tmp_path):
    with pytest.raises(SystemExit, match="cannot reach ComfyUI at http://127.0.0.1:.*scripts/run.sh"):
        run_main("--url", f"http://127.0.0.1:{free_port()}", "--references", str(reference_set), "--skip-metrics",
                 "--out", str(tmp_path))
    (tmp_path / "other.png").write_bytes((reference_set / "style_01.png").read_bytes())
    with pytest.raises(SystemExit, match="prompts.txt: no such prompt file"):
        run_main("--references", str(tmp_path), "--skip-metrics", "--out", str(tmp_path / "out"))
    (tmp_path / "prompts.txt").write_text("[style]\na robot\n")
    with pytest.raises(SystemExit, match="other.png: no prompts for it"):
        run_main("--references", str(tmp_path), "--skip-metrics", "--out", str(tmp_path / "out"))
