"""Starts the real ComfyUI server on a free 127.0.0.1 port, with this pack in its custom_nodes,
in a throwaway base directory (models/, input/, output/ of its own)."""
import os
import socket
import subprocess
import sys
import time
import urllib.error

from scripts import run_workflow
from scripts.fast_tier import refuse_in_fast_tier

PACK_FOLDER_NAME = "ComfyUI-DEADiff"
# the cheapest prompt ComfyUI accepts (it needs an output node)
FLUSH_PROMPT = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
                "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}


def pack_log_problems(log):
    """The lines of a ComfyUI server log that report trouble with this pack: a warning, an import failure
    or a traceback on a line that names it. An empty list for a clean start."""
    pack_lines = [line for line in log.splitlines() if "deadiff" in line.lower()]
    return [line for line in pack_lines if "WARNING" in line or "IMPORT FAILED" in line or "Traceback" in line]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    def __init__(self, comfyui_path, repo_root, base_dir, startup_timeout=240, extra_args=()):
        refuse_in_fast_tier("a ComfyUI server")
        self.base_dir = base_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        for folder in ("custom_nodes", "models", "input", "output"):
            os.makedirs(os.path.join(base_dir, folder), exist_ok=True)
        if repo_root:  # else the caller has put the pack into custom_nodes itself
            os.symlink(repo_root, os.path.join(base_dir, "custom_nodes", PACK_FOLDER_NAME))
        self.log_path = os.path.join(base_dir, "server.log")
        command = [sys.executable, "main.py", "--listen", "127.0.0.1", "--port", str(self.port), "--base-directory", base_dir,
                   "--disable-auto-launch", "--disable-api-nodes", *extra_args]
        if not _has_cuda():
            command.append("--cpu")
        self.process = subprocess.Popen(command, cwd=comfyui_path, stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT)
        self._wait_until_up(startup_timeout)

    def _wait_until_up(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited during start-up:\n{self.log()[-4000:]}")
            try:
                self.get("/system_stats")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        raise TimeoutError(f"ComfyUI did not answer within {timeout}s:\n{self.log()[-4000:]}")

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def request(self, path, payload=None):
        return run_workflow.call(self.url + path, payload)

    def get(self, path):
        status, body = self.request(path)
        assert status == 200, (path, status, body)
        return body

    def run(self, prompt, timeout=600):
        """Queue an API-format prompt and wait: (history entry or None, error message or None)."""
        return run_workflow.run(self.url, prompt, timeout)

    def free(self):
        """Unload models and drop ComfyUI's output cache, so the next prompt executes every node.

        The prompt worker reads these flags only when it wakes (for a prompt, or after a timeout of up to
        1000 s) and after running that prompt. So a tiny prompt goes first: by the time it is in the history,
        the flags are being applied, and the worker takes no other prompt before it is done.
        """
        self.request("/free", {"unload_models": True, "free_memory": True})
        _, error = self.run(FLUSH_PROMPT)
        assert error is None, error

    def input_path(self, name):
        return os.path.join(self.base_dir, "input", name)

    def output_path(self, item):
        return os.path.join(self.base_dir, item["type"], item["subfolder"], item["filename"])

    def model_path(self, folder, name):
        os.makedirs(os.path.join(self.base_dir, "models", folder), exist_ok=True)
        return os.path.join(self.base_dir, "models", folder, name)

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _has_cuda():
    import torch
    return torch.cuda.is_available()
