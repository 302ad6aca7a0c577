"""Benchmark scripts run end to end at tiny size (their figures are meaningless here; the pipeline is real)."""
import json
import os
import re
import subprocess
import sys
import time
import types

import pytest
import torch

from benchmarks import gpu_check
from support.paths import COMFYUI_PATH, REPO_ROOT

UNET_VARIANTS = ["unpatched", "style", "style and content", "style, 4 references concatenated", "style, with a mask",
                 "style, negative reference", "unpatched, 2 latents", "style, per-latent references"]
UNPATCHED = ("unpatched", "unpatched, 2 latents")  # per-latent references run on 2 latents, the others on 1


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
    rows, = tables(run_benchmark("-m", "benchmarks.load_checkpoint", "--size", "tiny", "--repeats", "1"))
    assert [row[0] for row in rows] == ["official .ckpt"] * 3 + ["adapter fp16", "adapter fp16 + vision"]
    for row in rows:
        assert float(row[3]) > 0 and float(row[5].rstrip("x")) > 0  # adapter MiB, ratio


def test_unet_step_benchmark_runs_and_profiles_every_variant_at_tiny_size():
    output = run_benchmark("-m", "benchmarks.unet_step", "--tiny", "--rounds", "2", "--profile")
    timings, *profiles = tables(output)
    assert [row[0] for row in timings] == UNET_VARIANTS
    for name, seconds, ratio in timings:
        assert median_of(seconds) > 0 and median_of(ratio) > 0
        assert (ratio == "1.000 (1.000-1.000)") == (name in UNPATCHED)  # each baseline against itself
    compared = [variant for variant in UNET_VARIANTS if variant not in UNPATCHED]
    assert re.findall(r"^profile, (.+) minus (unpatched.*?):", output, re.M) == [
        (variant, "unpatched, 2 latents" if "per-latent" in variant else "unpatched") for variant in compared]
    assert len(profiles) == len(compared) and all(profiles)


def test_encoder_throughput_benchmark_runs_at_tiny_size():
    rows, = tables(run_benchmark("-m", "benchmarks.encoder_throughput", "--tiny"))
    assert [row[0] for row in rows] == ["1"]
    _, seconds, images_per_second, qformer_seconds, share = rows[0]
    assert median_of(seconds) > 0 and median_of(images_per_second) > 0
    assert 0 < median_of(qformer_seconds) < median_of(seconds)
    assert 0 < median_of(share) < 100


def test_generation_benchmark_runs_cold_and_warm_through_the_server_at_tiny_size():
    output = run_benchmark("-m", "benchmarks.generation", "--tiny")
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
    output = run_benchmark("-m", "benchmarks.memory", "--tiny")
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


needs_dynamic_vram = pytest.mark.skipif(not gpu_check.dynamic_vram_flag_supported(COMFYUI_PATH),
                                        reason="the GPU check needs ComfyUI 0.33 or later (DynamicVRAM)")


@needs_dynamic_vram
def test_gpu_check_dry_run_runs_both_dynamic_vram_settings_and_checks_offloading(tmp_path):
    """benchmarks/gpu_check.sh --dry-run: the GPU check's whole path on the CPU at tiny size, its files in $OUT."""
    out = tmp_path / "out"
    result = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run"], capture_output=True, text=True,
                            cwd=REPO_ROOT, timeout=700, env=dict(os.environ, PYTHON=sys.executable, OUT=str(out)))
    assert result.returncode == 0, result.stdout[-4000:]
    output = result.stdout
    assert "GPU check passed (dry run" in output
    found = tables(output)
    assert len(found) == 7  # per setting: times, VRAM, offloading; then the summary
    for times, vram, patchers in (found[0:3], found[3:6]):
        assert [row[0] for row in times] == ["plain SD1.5, cold", "DEADiff, cold", "plain SD1.5, warm", "DEADiff, warm"]
        assert all(median_of(row[1]) > 0 for row in times)
        assert [row[0] for row in vram] == ["plain SD1.5", "DEADiff", "DEADiff - plain"]
        adapter = {row[0]: row for row in patchers if row[0].startswith("DEADiff")}
        assert list(adapter) == ["DEADiff Q-Formers", "DEADiff i_to_k/v projections", "DEADiff CLIP vision (embedded ViT)"]
        for row in adapter.values():
            before, after = row[4].split(" / ")
            assert float(before) > 0 and after == "0"  # loaded after a DEADiff prompt, unloaded by /free
            assert row[6] == "True / False" and row[7] == "n/a (CPU)"
        assert any(row[0] == "BaseModel" for row in patchers)  # the UNet, for comparison
    assert [row[0] for row in found[6]] == ["DynamicVRAM on", "DynamicVRAM off"]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["gpu_check.json", "gpu_check.log", "gpu_check_report.md", "server-dynamicvram-off.log",
                     "server-dynamicvram-on.log"]
    assert "Dynamic vram disabled with argument" in (out / "server-dynamicvram-off.log").read_text()
    assert "Dynamic vram disabled with argument" not in (out / "server-dynamicvram-on.log").read_text()
    assert "GPU check passed" in (out / "gpu_check.log").read_text()
    figures = json.loads((out / "gpu_check.json").read_text())
    assert [s["name"] for s in figures["settings"]] == ["DynamicVRAM on", "DynamicVRAM off"]


@needs_dynamic_vram
def test_gpu_check_stops_with_a_message_when_it_cannot_finish_in_time_or_finds_no_gpu():
    def check(*args):
        return subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", *args], capture_output=True, text=True,
                              cwd=REPO_ROOT, timeout=120)

    late = check("--dry-run", "--deadline", str(time.time() + 20))
    assert late.returncode == 1 and "FAILED:\n- time limit: writing the random-weight files needs about 60 s" in late.stdout
    if not torch.cuda.is_available():
        no_gpu = check()
        assert no_gpu.returncode == 1 and "no NVIDIA GPU found" in no_gpu.stdout


@pytest.mark.no_comfyui
@pytest.mark.fast
def test_gpu_check_reads_peak_vram_and_fails_on_what_it_must_fail_on(monkeypatch):
    """The GPU-only parts of the GPU check, with a stand-in for NVML: its sampler keeps the peak, and a run with
    DynamicVRAM off where it should be on, bf16 weights or an adapter patcher left on the GPU fails."""
    used = iter([1, 5, 9, 3] + [2] * 10_000)
    nvml = types.SimpleNamespace(nvmlInit=lambda: None, nvmlDeviceGetHandleByIndex=lambda i: "gpu0",
                                 nvmlDeviceGetName=lambda handle: b"Fake GPU",
                                 nvmlDeviceGetMemoryInfo=lambda handle: types.SimpleNamespace(used=next(used)))
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    device = gpu_check.DeviceMemory()
    assert device.name() == "Fake GPU"
    with device.peak(interval=0.001) as peak:
        time.sleep(0.05)
    assert peak["bytes"] == 9

    def patcher(name, loaded):
        return {"name": name, "loaded_size": loaded, "cuda_tensor_bytes": loaded, "in_loaded_models": bool(loaded)}

    def result(dynamic_vram, dtype, left_loaded):
        return {"dynamic_vram": dynamic_vram, "weight_dtypes": [f"{dtype} (manual cast None)"],
                "offload": {"before": [patcher("DEADiff Q-Formers", 10), patcher("BaseModel", 10)],
                            "after": [patcher("DEADiff Q-Formers", left_loaded), patcher("BaseModel", 0)]}}

    assert gpu_check.problems(result(True, "torch.float16", 0), on_gpu=True, want_dynamic=True) == []
    assert gpu_check.problems(result(False, "torch.bfloat16", 10), on_gpu=True, want_dynamic=True) == [
        "DynamicVRAM is off in the server", "weights not in fp16: ['torch.bfloat16 (manual cast None)']",
        "still on the GPU after /free: DEADiff Q-Formers"]
    assert gpu_check.problems(result(False, "torch.float32", 10), on_gpu=False, want_dynamic=True) == []  # CPU
