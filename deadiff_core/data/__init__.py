"""DEADiff's paired data: the manifest the trainer reads, and `python -m deadiff_core.data` to build one."""
