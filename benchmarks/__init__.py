"""Benchmarks, run as modules from the repository root: python -m benchmarks.unet_step (see README.md here).
They import deadiff_core and scripts (never tests/)."""
