"""Quality harness: DEADiff against plain SD1.5 (and its own weight and mode sweeps) on reference x prompt sets,
generated through a running ComfyUI server with fixed seeds, scored with the paper's metrics.

    python -m benchmarks.quality --clip DIR [--csd FILE] [--aesthetic FILE] [--out quality_results]
        [--url http://127.0.0.1:8188] [--checkpoint v1-5-pruned-emaonly.safetensors] [--deadiff deadiff_v1.ckpt]
        [--references DIR] [--prompts FILE] [--modes auto ...] [--weights 1.0 ...] [--size 512] [--steps 50]

The default set is ../shared/reference_images with its prompts.txt (style references with the style prompts
in mode style, content references with the content prompts in mode content). Writes images/, scores.csv,
summary.md and contact_sheet.png into --out; images already there are reused, so a rerun resumes or rescores.
"""
import argparse
import os
import sys
import urllib.error

from benchmarks.quality_generate import Generator, Settings, methods as method_list
import torch

from benchmarks.quality_metrics import Scorer
from benchmarks.quality_report import contact_sheet, summary, write_csv
from benchmarks.quality_sets import OFFICIAL_REFERENCES, cases as read_cases

MODES = ["auto", "style", "content", "style and content"]


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8188", help="the ComfyUI server (with this pack loaded)")
    parser.add_argument("--checkpoint", default="v1-5-pruned-emaonly.safetensors", help="SD1.5 file in models/checkpoints")
    parser.add_argument("--deadiff", default="deadiff_v1.ckpt", help="DEADiff file in models/deadiff")
    parser.add_argument("--references", default=OFFICIAL_REFERENCES, help="folder of reference images")
    parser.add_argument("--prompts", help="prompt file (default: prompts.txt in --references)")
    parser.add_argument("--seed", type=int, default=0, help="seed of prompts that carry none (`prompt_SEED` sets one)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=["auto"],
                        help="DEADiff modes to compare; auto: style for style references, content for content ones")
    parser.add_argument("--weights", nargs="+", type=float, default=[1.0], help="DEADiff weights to compare")
    parser.add_argument("--no-baseline", action="store_true", help="skip plain SD1.5")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--cfg", type=float, default=7.5)
    parser.add_argument("--clip", help="transformers CLIP folder (text alignment, CLIP style similarity)")
    parser.add_argument("--csd", help="CSD ViT-L checkpoint (optional CSD style similarity)")
    parser.add_argument("--aesthetic", help="LAION aesthetic predictor weights (optional aesthetic score)")
    parser.add_argument("--skip-metrics", action="store_true", help="only generate (score later by rerunning)")
    parser.add_argument("--out", default="quality_results", help="output folder")
    parser.add_argument("--thumb", type=int, default=160, help="contact sheet tile size in pixels")
    args = parser.parse_args(argv)
    if not (args.skip_metrics or args.clip):
        parser.error("the metrics need CLIP weights: pass --clip DIR (a local transformers CLIP folder such as "
                     "openai/clip-vit-large-patch14), or --skip-metrics to only generate")
    return args


def generate(args, cases, methods):
    """One row per (case, method), with the image generated or found in --out/images."""
    settings = Settings(args.checkpoint, args.deadiff, args.size, args.steps, args.cfg)
    generator = Generator(args.url, settings, os.path.join(args.out, "images"))
    rows, total = [], len(cases) * len(methods)
    for case in cases:
        for method in methods:
            try:
                path, made = generator.generate(case, method)
            except urllib.error.HTTPError as e:  # reached, but it refused an upload or a download
                raise SystemExit(f"ComfyUI at {args.url} answered {e.code} {e.reason} to {e.url}") from None
            except urllib.error.URLError as e:
                raise SystemExit(f"cannot reach ComfyUI at {args.url} ({e.reason}): start it with ./scripts/run.sh") from None
            rows.append(row(case, method, path))
            print(f"[{len(rows)}/{total}] {'generated' if made else 'kept'} {os.path.basename(path)}", flush=True)
    return rows


def row(case, method, image_path):
    deadiff = method.mode is not None
    return {"reference": os.path.basename(case.reference), "section": case.prompt.section or "other",
            "prompt": case.prompt.text, "seed": case.prompt.seed, "method": method.name,
            "mode": (case.default_mode if method.mode == "auto" else method.mode) if deadiff else "",
            "weight": method.weight if deadiff else "", "image": os.path.basename(image_path),
            "reference_path": case.reference, "image_path": image_path}


def main(argv=None):
    args = parse(argv)
    cases = read_cases(args.references, args.prompts or os.path.join(args.references, "prompts.txt"), args.seed)
    methods = method_list(args.modes, args.weights, baseline=not args.no_baseline)
    scorer = None if args.skip_metrics else Scorer(args.clip, args.csd, args.aesthetic)  # bad weights stop us here
    rows = generate(args, cases, methods)
    metrics = []
    if scorer:
        scorer.to("cuda" if torch.cuda.is_available() else "cpu")
        metrics = scorer.columns
        for found, scores in zip(rows, scorer.score([(r["image_path"], r["reference_path"], r["prompt"]) for r in rows])):
            found.update(scores)
    write_csv(os.path.join(args.out, "scores.csv"), [{k: r[k] for k in r if not k.endswith("_path")} for r in rows], metrics)
    table = summary(rows, metrics, [m.name for m in methods])
    with open(os.path.join(args.out, "summary.md"), "w", encoding="utf-8") as f:
        f.write(table)
    contact_sheet(os.path.join(args.out, "contact_sheet.png"), rows, [m.name for m in methods], args.thumb)
    print(table)
    print(f"wrote {args.out}/scores.csv, summary.md, contact_sheet.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
