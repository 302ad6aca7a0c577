"""Where things are: the repository root, and the ComfyUI the suite runs against (COMFYUI_PATH, which
./scripts/test.sh exports; conftest.py refuses to start without it)."""
import os

COMFYUI_PATH = os.environ.get("COMFYUI_PATH", "")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
