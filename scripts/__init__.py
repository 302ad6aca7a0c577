"""The developers' tools, run as modules from the repository root (python -m scripts.build_workflows ...), and
the pieces that drive a real ComfyUI from outside, which tests/ and benchmarks/ import too: run_workflow (the
HTTP client, also shipped for users), comfy_server (a throwaway server), browser (its editor in a headless
Chromium), graphs, sd15 and images (the user's graph and random stand-ins for its models and pictures).
Imports go one way: tests -> benchmarks -> scripts -> deadiff_core."""
