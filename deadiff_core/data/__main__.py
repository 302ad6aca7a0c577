"""Build DEADiff's paired training data.

    python -m deadiff_core.data generate --config pairs.toml
        render subjects x styles with an SD checkpoint (ComfyUI's sampler), then write
        <output_dir>/pairs.jsonl with style, content and reconstruction pairs; rerun to resume
    python -m deadiff_core.data index IMAGE_ROOT --manifest pairs.jsonl [--per-target N] [--seed S] [--no-recon]
        one folder per style: style and reconstruction pairs from an existing collection

See docs/TRAINING.md for the config and the manifest format.
"""
import argparse
import logging
import os
import sys

from ..config_files import ConfigError
from .manifest import write_manifest

MANIFEST = "pairs.jsonl"
log = logging.getLogger("deadiff")


def generate(config):
    from ..backbone import load_backbone
    from ..comfy_runtime import import_comfy
    from .generate import generate_images
    from .pairs import pair_rows

    import_comfy()
    output_dir = config.path(config.output_dir)
    backbone = load_backbone(config.model, config.path, config.precision)
    renders = generate_images(config, backbone)
    scores = None
    if config.similarity.clip:
        from ..clip_embeddings import ClipEmbeddings
        from .similarity import PairScores

        scores = PairScores(ClipEmbeddings(config.path(config.similarity.clip)), renders, output_dir)
    rows = pair_rows(renders, output_dir, config.pairs, config.seed, scores, config.similarity.min_score)
    path = os.path.join(output_dir, MANIFEST)
    write_manifest(path, rows)
    return path, rows


def _counts(rows):
    kinds = [row["kind"] for row in rows]
    return ", ".join(f"{kinds.count(k)} {k}" for k in ("style", "content", "recon"))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m deadiff_core.data", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    commands = parser.add_subparsers(dest="command", required=True)
    generate_parser = commands.add_parser("generate", help="render prompts and pair the images")
    generate_parser.add_argument("--config", required=True, help="a .toml or .json builder config")
    index_parser = commands.add_parser("index", help="pairs from an image folder tree, one folder per style")
    index_parser.add_argument("root")
    index_parser.add_argument("--manifest", required=True)
    index_parser.add_argument("--per-target", type=int, default=1, help="style references per target image (default 1)")
    index_parser.add_argument("--seed", type=int, default=0)
    index_parser.add_argument("--no-recon", action="store_true", help="leave out reconstruction pairs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[deadiff data] %(message)s")

    if args.command == "index":
        from .folders import index_rows

        if not os.path.isdir(args.root):
            print(f"error: {args.root} is not a folder", file=sys.stderr)
            return 2
        rows = index_rows(args.root, args.per_target, args.seed, recon=not args.no_recon)
        if not rows:
            print(f"error: no images under {args.root}", file=sys.stderr)
            return 2
        write_manifest(args.manifest, rows)
        print(f"wrote {args.manifest}: {_counts(rows)} pairs")
        return 0

    from .builder_config import load_builder_config
    try:
        config = load_builder_config(args.config)
    except (ConfigError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    path, rows = generate(config)
    print(f"wrote {path}: {_counts(rows)} pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
