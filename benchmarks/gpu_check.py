"""The GPU check: DEADiff through a real ComfyUI server on an NVIDIA GPU, with DynamicVRAM on and off.

    python -m benchmarks.gpu_check [--dry-run] [--deadline UNIX_SECONDS] [--out DIR] [--workdir DIR]

benchmarks/gpu_check.sh runs it (and sets up a bare GPU machine first); benchmarks/README.md says how.

Writes a random-weight SD1.5 checkpoint (fp16, full size) and a random DEADiff file in the official
deadiff_v1.ckpt layout at full size (7.4 GB: both BLIP models with their ViT copies, both ProjLayers, the 32
i_to_k/v, and stand-ins of the real sizes for the UNet, VAE and text encoder), both timed. Then, for DynamicVRAM
on (ComfyUI's default on NVIDIA) and off (--disable-dynamic-vram), it starts ComfyUI with this pack and
benchmarks/gpu_probe in custom_nodes and runs generation.py's measurement: 512x512, 20 DDIM steps, the SD1.5
graph with and without Load DEADiff Model / Encode Reference / Apply, cold (after /free) and warm, interleaved.
It prints per setting:
- seconds per generation, DEADiff against the same graph without it (the server's own timestamps);
- peak VRAM per graph, two ways: the GPU's used memory as NVML reports it, sampled every 2 ms from this process
  during each prompt, above what was used before the server started (everything the server holds: its CUDA
  context, torch's cached blocks, comfy-aimdo's DynamicVRAM weights); and torch's own peak counters read inside
  the server (tensors through torch's allocator only: DynamicVRAM's weights are not among them);
- whether the adapter is offloaded after /free: for each of DEADiff's ModelPatchers (Q-Formers, i_to_k/v
  projections, embedded CLIP vision) and, for comparison, the models ComfyUI had loaded, what ComfyUI counts as
  loaded on the GPU and the bytes of its tensors there, before and after /free, with the VRAM totals.
It exits non-zero with a message when something fails: a server or prompt, a DynamicVRAM setting that did not
take, weights not in fp16, an adapter patcher still on the GPU after /free, or the time limit (--deadline).

--dry-run is the CPU version CI runs (tests/test_benchmarks.py): 64 px, 1 step, 1 round, a DEADiff file with
one ViT block and a one-layer Q-Former; the SD1.5 checkpoint stays full size (ComfyUI only detects SD1.5 at its
real width). DynamicVRAM does not exist on the CPU, so both settings run the same there; VRAM is "n/a".
"""
import argparse
import contextlib
import dataclasses
import json
import os
import re
import signal
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import torch

from benchmarks.generation import COLD, PIPELINES, WARM, Run, check_cold, measure, report_totals, timed_run
from benchmarks.harness import ROOT, ratios_to, root_on_pythonpath, spread
from deadiff_core.comfy_runtime import comfyui_path, import_comfy
from scripts.comfy_server import FLUSH_PROMPT, PACK_FOLDER_NAME, ComfyServer
from scripts.graphs import CHECKPOINT, DEADIFF, REFERENCE, graph, write_reference

SETTINGS = {"DynamicVRAM on": [], "DynamicVRAM off": ["--disable-dynamic-vram"]}
FULL = dict(size=512, steps=20, rounds=3, warmup=1)
DRY = dict(size=64, steps=1, rounds=1, warmup=0)
PROBE = "deadiff_gpu_probe"  # benchmarks/gpu_probe's folder name in the server's custom_nodes
MIB = 2**20


class CheckFailed(Exception):
    pass


# what a failing server, prompt or check raises
FAILURES = (CheckFailed, RuntimeError, OSError, AssertionError)


def describe(error):
    return str(error) if isinstance(error, CheckFailed) else f"{type(error).__name__}: {error}"


class Budget:
    """The time limit: each phase asks for what it expects to need before it starts."""

    def __init__(self, deadline):
        self.deadline = deadline

    def left(self):
        return self.deadline - time.time()

    def need(self, seconds, what):
        if self.left() < seconds:
            raise CheckFailed(f"time limit: {what} needs about {seconds:.0f} s and {max(self.left(), 0):.0f} s are left")


class DeviceMemory:
    """Used memory of GPU 0 as NVML reports it (every process and allocator, CUDA contexts included); None
    without NVML (no NVIDIA GPU, or no nvidia-ml-py)."""

    def __init__(self):
        self.handle = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # noqa: BLE001 - any failure means: not measured
            pass

    def name(self):
        if self.handle is None:
            return None
        name = self.nvml.nvmlDeviceGetName(self.handle)
        return name.decode() if isinstance(name, bytes) else name

    def used(self):
        return None if self.handle is None else self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used

    @contextlib.contextmanager
    def peak(self, interval=0.002):
        """Yields a dict whose "bytes" is, afterwards, the most used while the block ran."""
        result = {"bytes": self.used()}
        if self.handle is None:
            yield result
            return
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                result["bytes"] = max(result["bytes"], self.used())
                stop.wait(interval)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield result
        finally:
            stop.set()
            thread.join()
            result["bytes"] = max(result["bytes"], self.used())


@dataclasses.dataclass
class GPURun(Run):
    vram: dict = dataclasses.field(default_factory=dict)  # device_peak (NVML, above idle), torch and aimdo counters


class Probe:
    """benchmarks/gpu_probe's routes in the running server."""

    def __init__(self, server):
        self.server = server

    def get(self, route):
        return self.server.get(f"/deadiff_gpu_check/{route}")

    def post(self, route):
        status, body = self.server.request(f"/deadiff_gpu_check/{route}", {})
        if status != 200:
            raise CheckFailed(f"the probe's /{route} answered {status}: {body}")
        return body


# ---- files ---------------------------------------------------------------------------------------------------


def model_path(base_dir, folder, name):
    """Where ComfyServer(base_dir=...).model_path(folder, name) looks, before any server runs."""
    os.makedirs(os.path.join(base_dir, "models", folder), exist_ok=True)
    return os.path.join(base_dir, "models", folder, name)


def write_file(kind, base_dir, dry_run):
    """One of the random-weight files (run in a child process that sees no GPU)."""
    if kind == "sd15":
        from scripts.sd15 import sd15_checkpoint

        sd15_checkpoint(import_comfy(), model_path(base_dir, "checkpoints", CHECKPOINT), seed=21)
        os.makedirs(os.path.join(base_dir, "input"), exist_ok=True)
        write_reference(os.path.join(base_dir, "input", REFERENCE))
    else:
        from deadiff_core.synthetic import VIT_L_TINY, OfficialLayout, official_state_dict, save_official_checkpoint
        from benchmarks.load_checkpoint import stand_ins

        layout, scale = (VIT_L_TINY, 1e-4) if dry_run else (OfficialLayout(), 1.0)
        state_dict = official_state_dict(layout, seed=22)
        state_dict.update(stand_ins(scale))
        save_official_checkpoint(model_path(base_dir, "deadiff", DEADIFF), state_dict)


class FileWriters:
    """Both files written at once, each by its own process that sees no GPU, while the first server starts."""

    def __init__(self, base_dir, dry_run, budget):
        budget.need(60, "writing the random-weight files")
        self.base_dir, self.budget = base_dir, budget
        env = root_on_pythonpath(dict(os.environ, CUDA_VISIBLE_DEVICES=""))
        env.pop("PYTHONUNBUFFERED", None)
        env.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
        self.start = time.perf_counter()
        self.processes = {kind: subprocess.Popen([sys.executable, "-m", "benchmarks.gpu_check", "--write-file", kind, "--workdir", base_dir,
                                                  *(["--dry-run"] if dry_run else [])], env=env)
                          for kind in ("sd15", "deadiff")}
        self.result = self.failed = None

    def wait(self):
        """{kind: (seconds, GiB)} once both are written."""
        if self.result is not None:
            return self.result
        done = {}
        while len(done) < len(self.processes):
            for kind, process in self.processes.items():
                if kind not in done and process.poll() is not None:
                    if process.returncode:
                        self.stop()
                        self.failed = f"writing the {kind} file failed (exit status {process.returncode})"
                        raise CheckFailed(self.failed)
                    done[kind] = time.perf_counter() - self.start
            if self.budget.left() < 30:
                self.stop()
                self.failed = "time limit: the random-weight files were not written in time"
                raise CheckFailed(self.failed)
            time.sleep(0.1)
        paths = {"sd15": model_path(self.base_dir, "checkpoints", CHECKPOINT),
                 "deadiff": model_path(self.base_dir, "deadiff", DEADIFF)}
        self.result = {kind: (done[kind], os.path.getsize(paths[kind]) / 2**30) for kind in self.processes}
        print("Random-weight files written (in parallel, while the first server started): " + ", ".join(
            f"{kind} {gib:.2f} GiB in {seconds:.1f} s" for kind, (seconds, gib) in self.result.items()))
        return self.result

    def stop(self):
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()


# ---- one DynamicVRAM setting ---------------------------------------------------------------------------------


def start_server(base_dir, flags, budget):
    budget.need(90, "starting ComfyUI")
    linked = os.path.lexists(os.path.join(base_dir, "custom_nodes", PACK_FOLDER_NAME))  # by the first server
    front_end = os.path.join(base_dir, "no_frontend")  # an empty web root: the check needs no editor
    os.makedirs(front_end, exist_ok=True)
    start = time.perf_counter()
    server = ComfyServer(comfyui_path(), None if linked else ROOT, base_dir, startup_timeout=max(min(budget.left() - 30, 240), 1),
                         extra_args=["--front-end-root", front_end, *flags])
    return server, time.perf_counter() - start


def probed(server, probe, device, idle, budget):
    """generation.timed_run, also reading the VRAM the prompt took; records which graph ran last."""
    def run(_, prompt):
        budget.need(10, "the next prompt")
        probe.post("reset_peak")
        with device.peak() as peak:
            result = timed_run(server, prompt, timeout=max(budget.left() - 15, 1))
        memory = probe.get("memory")
        run.last_with_deadiff = any(node["class_type"] == "DEADiffApply" for node in prompt.values())
        device_peak = None if peak["bytes"] is None else peak["bytes"] - idle
        return GPURun(**dataclasses.asdict(result), vram=dict(memory, device_peak=device_peak))
    run.last_with_deadiff = False
    return run


def offload_check(server, probe, device, idle, run, size, steps):
    """What is on the GPU with the DEADiff graph's models loaded, then after /free: per patcher and in total."""
    if not run.last_with_deadiff:  # load the adapter: the last measured prompt was the plain graph
        run(server, graph(with_deadiff=True, seed=999, size=size, steps=steps))
    held = probe.post("hold")["held"]
    state = {"held": held, "before": probe.get("patchers"), "memory_before": probe.get("memory"), "device_before": device.used()}
    server.free()
    # /free's flags are applied after the prompt that follows it (free() waits for that one); the worker takes no
    # prompt before it is done, so a second one finishing means the unload has happened
    _, error = server.run(FLUSH_PROMPT)
    if error:
        raise CheckFailed(f"the prompt after /free failed: {error}")
    state.update(after=probe.get("patchers"), memory_after=probe.get("memory"), device_after=device.used())
    probe.post("release")
    for key in ("device_before", "device_after"):
        state[key] = None if state[key] is None else state[key] - idle
    return state


def server_log_facts(log):
    """What the server's log says about the settings that matter here."""
    dtypes = sorted(set(re.findall(r"model weight dtype (\S+), manual cast: (\S+)", log)))
    return {"dynamic_vram_log": ("enabled" if "DynamicVRAM support detected and enabled" in log else
                                 "disabled by argument" if "Dynamic vram disabled with argument" in log else "not mentioned"),
            "weight_dtypes": [f"{d} (manual cast {c})" for d, c in dtypes],
            "attention": sorted(set(re.findall(r"Using (.+?)(?: optimization)?(?: for)? attention(?! in VAE)", log))),
            "kitchen_backends": [f"{name} {'available' if ok == 'True' else 'unavailable'}" for name, ok in
                                 re.findall(r"Found comfy_kitchen backend (\S+): \{'available': (\w+)", log)]}


def run_setting(name, flags, base_dir, config, device, budget, files, out):
    idle = device.used()
    server, startup = start_server(base_dir, flags, budget)
    try:
        waited = time.perf_counter()
        files.wait()
        waited = time.perf_counter() - waited
        probe = Probe(server)
        run = probed(server, probe, device, idle or 0, budget)
        runs, others = measure(server, config["rounds"], config["warmup"], config["size"], config["steps"], run=run)
        try:
            check_cold(runs)
            cold_problem = None
        except SystemExit as e:  # the figures are still worth printing
            cold_problem = str(e)
        offload = offload_check(server, probe, device, idle or 0, run, config["size"], config["steps"])
        memory = probe.get("memory")
    except FAILURES:
        print(f"\n{name}: the end of the server's log\n```\n{server.log()[-3000:]}\n```")
        raise
    finally:
        server.stop()
        if out:
            shutil.copy(server.log_path, os.path.join(out, f"server-{name.replace(' ', '-').lower()}.log"))
    return {"name": name, "flags": flags, "startup": startup, "waited_for_files": waited, "runs": runs, "others": others,
            "offload": offload, "cold_problem": cold_problem, "dynamic_vram": memory["dynamic_vram"], "cuda": memory["cuda"],
            **server_log_facts(server.log())}


# ---- report --------------------------------------------------------------------------------------------------


def mib(value):
    return "n/a" if value is None else f"{value / MIB:.0f}"


def graph_peaks(runs, name):
    """The most any run of a graph (cold or warm) took: NVML above idle, torch allocated, torch reserved, and the
    most comfy-aimdo held after one."""
    values = [run.vram for state in (COLD, WARM) for run in runs[name, state]]
    return [max((v[key] for v in values if v.get(key) is not None), default=None)
            for key in ("device_peak", "max_allocated", "max_reserved", "aimdo_vram")]


def report_memory(runs):
    print("\n| graph | peak VRAM used above idle MiB (NVML, whole GPU) | torch peak allocated MiB | torch peak reserved MiB "
          "| comfy-aimdo VRAM after a run MiB |")
    print("| --- | --- | --- | --- | --- |")
    peaks = {name: graph_peaks(runs, name) for name in PIPELINES}
    for name, values in peaks.items():
        print(f"| {name} | " + " | ".join(map(mib, values)) + " |")
    plain, deadiff = peaks["plain SD1.5"], peaks["DEADiff"]
    print("| DEADiff - plain | " + " | ".join("n/a" if a is None or b is None else f"{(b - a) / MIB:+.0f}"
                                            for a, b in zip(plain, deadiff)) + " |")
    return peaks


def offloaded(patcher):
    return patcher["loaded_size"] == 0 and patcher["cuda_tensor_bytes"] == 0 and not patcher["in_loaded_models"]


def report_offload(offload, on_gpu):
    print("\n| patcher | class | load device | size MiB | ComfyUI's loaded MiB, before / after /free | tensors on the GPU "
          "MiB, before / after | in ComfyUI's loaded models, before / after | offloaded after /free |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for before, after in zip(offload["before"], offload["after"]):
        if not on_gpu:
            verdict = "n/a (CPU)"
        else:
            verdict = "NO" if not offloaded(after) else "yes (was not on the GPU)" if offloaded(before) else "yes"
        print(f"| {before['name']} | {before['class']} | {before['load_device']} | {mib(before['model_size'])} | "
              f"{mib(before['loaded_size'])} / {mib(after['loaded_size'])} | {mib(before['cuda_tensor_bytes'])} / "
              f"{mib(after['cuda_tensor_bytes'])} | {before['in_loaded_models']} / {after['in_loaded_models']} | {verdict} |")
    m0, m1 = offload["memory_before"], offload["memory_after"]
    print(f"\nVRAM before / after /free: GPU used above idle (NVML) {mib(offload['device_before'])} / "
          f"{mib(offload['device_after'])} MiB; torch allocated {mib(m0.get('allocated'))} / {mib(m1.get('allocated'))} MiB, "
          f"reserved {mib(m0.get('reserved'))} / {mib(m1.get('reserved'))} MiB; comfy-aimdo {mib(m0['aimdo_vram'])} / "
          f"{mib(m1['aimdo_vram'])} MiB")


def adapter_offloaded(offload, on_gpu):
    adapter = [p for p in offload["after"] if p["name"].startswith("DEADiff")]
    if not on_gpu or not adapter:
        return None
    return all(map(offloaded, adapter))


def report_setting(result, config, on_gpu):
    runs = result["runs"]
    print(f"\n## {result['name']} (ComfyUI flags: {' '.join(result['flags']) or 'none'})\n")
    print(f"Server start-up {result['startup']:.1f} s; DynamicVRAM in the server: {result['dynamic_vram']} (log: "
          f"{result['dynamic_vram_log']}); weights: {', '.join(result['weight_dtypes']) or 'not logged'}; attention: "
          f"{', '.join(result['attention']) or 'not logged'}; comfy-kitchen backends: "
          f"{', '.join(result['kitchen_backends']) or 'not logged'}; {config['rounds']} rounds after {config['warmup']} warm-up, "
          f"other processes took {result['others']:.0%} of the CPU\n")
    report_totals(runs, {name: graph(with_deadiff=d) for name, d in PIPELINES.items()})
    result["peaks"] = report_memory(runs)
    report_offload(result["offload"], on_gpu)
    result["adapter_offloaded"] = adapter_offloaded(result["offload"], on_gpu)


def report_summary(results):
    print("\n## Summary\n")
    print("| setting | server start-up s | plain warm s | DEADiff warm s | DEADiff / plain, warm | DEADiff / plain, cold | "
          "peak VRAM plain / DEADiff MiB (NVML) | adapter offloaded after /free |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        runs = r["runs"]
        seconds = {(name, state): [run.seconds for run in runs[name, state]] for name in PIPELINES for state in (COLD, WARM)}
        ratio = {state: ratios_to({n: seconds[n, state] for n in PIPELINES}, "plain SD1.5")["DEADiff"] for state in (COLD, WARM)}
        verdict = {True: "yes", False: "NO", None: "n/a"}[r["adapter_offloaded"]]
        print(f"| {r['name']} | {r['startup']:.1f} | {spread(seconds['plain SD1.5', WARM])} | {spread(seconds['DEADiff', WARM])} | "
              f"{spread(ratio[WARM], 3)} | {spread(ratio[COLD], 3)} | {mib(r['peaks']['plain SD1.5'][0])} / "
              f"{mib(r['peaks']['DEADiff'][0])} | {verdict} |")


def problems(result, on_gpu, want_dynamic):
    """What makes the check fail, for one setting (on the GPU: the CPU has no DynamicVRAM or fp16 to check)."""
    found = [result["cold_problem"]] if result.get("cold_problem") else []
    if not [p for p in result["offload"]["before"] if p["name"].startswith("DEADiff")]:
        found.append("no DEADiff ModelPatcher was found in the server")
    if not on_gpu:
        return found
    if result["dynamic_vram"] != want_dynamic:
        found.append(f"DynamicVRAM is {'on' if result['dynamic_vram'] else 'off'} in the server")
    if not result["weight_dtypes"] or any(not d.startswith("torch.float16") for d in result["weight_dtypes"]):
        found.append(f"weights not in fp16: {result['weight_dtypes'] or 'not logged'}")
    stuck = [p["name"] for p in result["offload"]["after"] if p["name"].startswith("DEADiff") and not offloaded(p)]
    if stuck:
        found.append("still on the GPU after /free: " + ", ".join(stuck))
    return found


def as_json(results, files, failures):
    settings = [dict(r, runs={f"{name}, {state}": [dataclasses.asdict(run) for run in runs]
                              for (name, state), runs in r["runs"].items()}) for r in results]
    return {"files": files, "settings": settings, "failures": failures}


class Tee:
    """stdout, also written to a file."""

    def __init__(self, stream, path):
        self.stream, self.file = stream, open(path, "w")

    def write(self, text):
        self.stream.write(text)
        self.file.write(text)
        self.stream.flush()
        self.file.flush()

    def flush(self):
        self.stream.flush()
        self.file.flush()


# ---- main ----------------------------------------------------------------------------------------------------


def dynamic_vram_flag_supported(comfyui):
    """ComfyUI 0.33 and later have --disable-dynamic-vram; 0.3.x has no DynamicVRAM."""
    with open(os.path.join(comfyui, "comfy", "cli_args.py")) as f:
        return "--disable-dynamic-vram" in f.read()


def comfyui_version(comfyui):
    with open(os.path.join(comfyui, "comfyui_version.py")) as f:
        return re.search(r'__version__ = "(.*)"', f.read()).group(1)


def check(args, budget, out):
    device = DeviceMemory()
    on_gpu = not args.dry_run
    if on_gpu and device.handle is None:
        raise CheckFailed("no NVIDIA GPU found through NVML (nvidia-ml-py); use --dry-run on a machine without one")
    if on_gpu and not torch.cuda.is_available():
        raise CheckFailed("torch sees no CUDA device")
    comfyui = comfyui_path()
    if not dynamic_vram_flag_supported(comfyui):
        raise CheckFailed(f"ComfyUI {comfyui_version(comfyui)} at {comfyui} has no DynamicVRAM (--disable-dynamic-vram): "
                          "the check needs ComfyUI 0.33 or later")
    config = DRY if args.dry_run else FULL
    print(f"# DEADiff GPU check{' (dry run, CPU)' if args.dry_run else ''}\n")
    print(f"ComfyUI {comfyui_version(comfyui)}, torch {torch.__version__}, Python {sys.version.split()[0]}, "
          f"GPU: {device.name() or 'none'}; {config['size']}x{config['size']} px, {config['steps']} DDIM steps "
          f"(ddim_uniform), CFG 8, batch 1; {budget.left():.0f} s left of the time limit")
    os.makedirs(args.workdir, exist_ok=True)
    base_dir = tempfile.mkdtemp(prefix="comfyui-", dir=args.workdir)
    os.makedirs(os.path.join(base_dir, "custom_nodes"))
    os.symlink(os.path.join(ROOT, "benchmarks", "gpu_probe"), os.path.join(base_dir, "custom_nodes", PROBE))
    files = FileWriters(base_dir, args.dry_run, budget)
    results, failures = [], []
    try:
        for name, flags in SETTINGS.items():
            if files.failed:  # no setting can run without the files
                break
            if results:  # the next setting takes about as long as the first did, less its wait for the files
                budget.need((results[0]["seconds"] - results[0]["waited_for_files"]) * 1.2 + 15, name)
            start = time.perf_counter()
            try:
                result = run_setting(name, flags, base_dir, config, device, budget, files, out)
            except FAILURES as e:  # the next setting has a server of its own: it may still run
                failures.append(f"{name}: {describe(e)}")
                continue
            result["seconds"] = time.perf_counter() - start
            report_setting(result, config, on_gpu)
            failures += [f"{name}: {p}" for p in problems(result, on_gpu, want_dynamic=not flags)]
            results.append(result)
    except CheckFailed as e:  # the time limit before a setting
        failures.append(str(e))
    finally:
        files.stop()
        shutil.rmtree(base_dir, ignore_errors=True)
    if results:
        report_summary(results)
    if out:
        with open(os.path.join(out, "gpu_check.json"), "w") as f:
            json.dump(as_json(results, files.result, failures), f, indent=1, default=str)
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, 64 px, 1 step, 1 round, a small DEADiff file (for CI)")
    parser.add_argument("--deadline", type=float, help="UNIX time by which everything must be done "
                                                       "(default: 7 minutes from now, 10 with --dry-run)")
    parser.add_argument("--out", default=os.environ.get("OUT") or None,
                        help="folder for the report, the JSON figures and the server logs (default: $OUT if set)")
    parser.add_argument("--workdir", help="where the model files and server folders go (default: a temporary folder)")
    parser.add_argument("--write-file", choices=["sd15", "deadiff"], help=argparse.SUPPRESS)  # the child processes
    args = parser.parse_args()
    # This process starts servers and reads NVML; it must not create a CUDA context of its own (that would count in
    # the GPU's used memory): torch.cuda.is_available() then asks NVML instead of initialising CUDA.
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    if args.write_file:
        return write_file(args.write_file, args.workdir, args.dry_run)
    budget = Budget(args.deadline or time.time() + (600 if args.dry_run else 420))

    def stopped(signum, frame):  # `timeout` in gpu_check.sh: stop the servers (finally blocks) and say why
        raise CheckFailed(f"stopped by signal {signum} (the time limit in gpu_check.sh?)")
    signal.signal(signal.SIGTERM, stopped)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        sys.stdout = Tee(sys.stdout, os.path.join(args.out, "gpu_check_report.md"))
    temporary = None
    if not args.workdir:
        temporary = args.workdir = tempfile.mkdtemp(prefix="deadiff-gpu-check-")
    try:
        failures = check(args, budget, args.out)
    except FAILURES as e:
        failures = [describe(e)]
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
    if failures:
        print("\nFAILED:\n" + "\n".join(f"- {f}" for f in failures))
        return 1
    print("\nGPU check passed" + (" (dry run: the figures mean nothing)" if args.dry_run else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
