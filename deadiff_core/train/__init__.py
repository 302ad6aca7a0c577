"""DEADiff training (docs/DESIGN.md, Training): `python -m deadiff_core.train --config ...`; see docs/TRAINING.md."""
