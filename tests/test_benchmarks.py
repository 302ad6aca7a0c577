"""Benchmark scripts run end to end at tiny size (their figures are meaningless here; the pipeline is real)."""
import re
import subprocess
import sys

import pytest
import torch

from conftest import REPO_ROOT

UNET_VARIANTS = ["unpatched", "style", "style and content", "style, 4 references concatenated", "style, with a mask"]


def run_benchmark(*args):
    """The script's output (after checking it exits 0)."""
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO_ROOT, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def tables(output):
    """Each markdown table printed, as rows of cells without the header."""
    found, current = [], None
    for line in output.splitlines():
        if not line.startswith("|"):
            current = None
        elif current is None:
            current = []  # the header row
            found.append(current)
        elif not line.startswith("| ---"):
            current.append([cell.strip() for cell in line.strip("|").split("|")])
    return found


def median_of(cell):
    """'1.234 (1.000-1.500)' -> 1.234, after checking min <= median <= max."""
    median, low, high = map(float, re.fullmatch(r"([\d.]+) \(([\d.]+)-([\d.]+)\)", cell).groups())
    assert low <= median <= high
    return median


def test_load_checkpoint_benchmark_runs_at_tiny_size():
    rows, = tables(run_benchmark("benchmarks/load_checkpoint.py", "--size", "tiny", "--repeats", "1"))
    assert [row[0] for row in rows] == ["official .ckpt"] * 3 + ["adapter fp16", "adapter fp16 + vision"]
    for row in rows:
        assert float(row[3]) > 0 and float(row[5].rstrip("x")) > 0  # adapter MiB, ratio


def test_unet_step_benchmark_runs_and_profiles_every_variant_at_tiny_size():
    output = run_benchmark("benchmarks/unet_step.py", "--tiny", "--rounds", "2", "--profile")
    timings, *profiles = tables(output)
    assert [row[0] for row in timings] == UNET_VARIANTS
    assert timings[0][2] == "1.000 (1.000-1.000)"  # the baseline against itself
    for _, seconds, ratio in timings:
        assert median_of(seconds) > 0 and median_of(ratio) > 0
    assert re.findall(r"^profile, (.+) minus unpatched:", output, re.M) == UNET_VARIANTS[1:]
    assert len(profiles) == 4 and all(profiles)


def test_encoder_throughput_benchmark_runs_at_tiny_size():
    rows, = tables(run_benchmark("benchmarks/encoder_throughput.py", "--tiny"))
    assert [row[0] for row in rows] == ["1"]
    _, seconds, images_per_second, qformer_seconds, share = rows[0]
    assert median_of(seconds) > 0 and median_of(images_per_second) > 0
    assert 0 < median_of(qformer_seconds) < median_of(seconds)
    assert 0 < median_of(share) < 100


def test_generation_benchmark_runs_cold_and_warm_through_the_server_at_tiny_size():
    output = run_benchmark("benchmarks/generation.py", "--tiny")
    totals, nodes = tables(output)
    runs = {row[0]: row[1:] for row in totals}
    assert list(runs) == ["plain SD1.5, cold", "DEADiff, cold", "plain SD1.5, warm", "DEADiff, warm"]
    for seconds, ratio, _ in runs.values():
        assert median_of(seconds) > 0 and median_of(ratio) > 0
    assert runs["plain SD1.5, cold"][2] == runs["DEADiff, cold"][2] == "none"
    # the warm run after a cold one: everything but the sampler and what follows it comes from ComfyUI's cache
    assert runs["DEADiff, warm"][2] == ("CheckpointLoaderSimple, CLIPTextEncode x2, EmptyLatentImage, DEADiffLoader, "
                                        "LoadImage, DEADiffEncode, DEADiffApply")
    assert "taken from ComfyUI's cache in 1 of 1 rounds" in output
    per_node = {row[0]: row[1:] for row in nodes}  # plain cold, DEADiff cold, plain warm, DEADiff warm
    for node in ("5 DEADiffLoader", "7 DEADiffEncode"):
        assert per_node[node][0] == "-" and float(per_node[node][1]) > 0 and per_node[node][3] == "cached"
    assert all(float(seconds) > 0 for seconds in per_node["9 KSampler"])


def test_memory_benchmark_sizes_each_branch_choice_at_tiny_size():
    output = run_benchmark("benchmarks/memory.py", "--tiny")
    sizes, *vram = tables(output)
    rows = {(row[0], row[1]): [float(cell) for cell in row[2:]] for row in sizes}
    assert list(rows) == [(branches, dtype) for branches in ("both", "style only", "content only")
                          for dtype in ("fp16", "fp32")]
    for dtype in ("fp16", "fp32"):
        (both, style, content) = (rows[branches, dtype] for branches in ("both", "style only", "content only"))
        encoder, projections, vision, held, patchers = range(5)
        assert style[held] < both[held] and content[held] < both[held]
        # each branch brings its own Q-Former and layers' projections; the embedded ViT is shared
        for part in (encoder, projections):
            assert style[part] + content[part] == pytest.approx(both[part], abs=0.2)
        assert style[vision] == content[vision] == both[vision] > 0
        for row in (both, style, content):
            assert row[held] == pytest.approx(row[encoder] + row[projections] + row[vision], abs=0.2)
            assert row[patchers] == pytest.approx(row[held], abs=0.2)  # ComfyUI sees everything the adapter holds
    assert rows["both", "fp16"][0] == pytest.approx(rows["both", "fp32"][0] / 2, rel=0.01)
    if not torch.cuda.is_available():
        assert "VRAM during sampling: not measured (no GPU" in output and not vram
    else:
        (modes,) = vram
        assert [(row[0], row[1]) for row in modes] == [("-", "unpatched"), ("both", "style"), ("both", "content"),
                                                      ("both", "style and content"), ("style only", "style"),
                                                      ("content only", "content")]
        assert all(float(row[4]) > 0 for row in modes[1:])
