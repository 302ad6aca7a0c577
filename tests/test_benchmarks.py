"""Benchmark scripts run end to end at tiny size (their figures are meaningless here; the pipeline is real)."""
import re
import subprocess
import sys

from conftest import REPO_ROOT


def test_load_checkpoint_benchmark_runs_at_tiny_size():
    result = subprocess.run([sys.executable, "benchmarks/load_checkpoint.py", "--size", "tiny", "--repeats", "1"],
                            capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if re.match(r"\| (official|adapter)", line)]
    assert len(rows) == 5
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[3]) > 0 and float(cells[5].rstrip("x")) > 0  # adapter MiB, ratio
