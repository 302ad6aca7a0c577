"""Train DEADiff on paired data.

    python -m deadiff_core.train --config train.toml                       # one GPU (or the CPU)
    torchrun --nproc_per_node 8 -m deadiff_core.train --config train.toml  # one machine, 8 GPUs
    torchrun --nnodes 4 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \\
        -m deadiff_core.train --config train.toml                          # 4 machines

See docs/TRAINING.md for the config, the data layout and memory per GPU.
"""
import argparse
import logging
import os
import sys

from .config import ConfigError, load_config


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m deadiff_core.train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--config", required=True, help="a .toml or .json training config")
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"[deadiff train{'' if rank == 0 else f' rank {rank}'}] %(message)s")
    try:
        config = load_config(args.config)
    except (ConfigError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from ..comfy_runtime import import_comfy
    from .distributed import start_processes

    start_processes(config.distributed.backend)  # first: each process picks its GPU before ComfyUI looks for one
    import_comfy()
    from .trainer import train

    path = train(config)
    if path:
        print(f"adapter: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
