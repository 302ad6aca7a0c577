"""DEADiff training (spec §4): `python -m deadiff_core.train --config ...`; see docs/TRAINING.md."""
