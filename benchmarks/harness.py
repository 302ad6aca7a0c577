"""What the benchmarks share: their command lines, interleaved timing, medians and spreads (ComfyUI is imported
by deadiff_core.comfy_runtime, as everywhere outside a server)."""
import argparse
import os
import resource
import statistics
import time

import torch

from deadiff_core.comfy_runtime import import_comfy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def root_on_pythonpath(env=None):
    """`env` (default: this process's) with the repository root first on PYTHONPATH: a child python then imports
    deadiff_core and benchmarks from whatever working directory it has."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    return env


def command_line(doc, tiny_help):
    """A benchmark's argument parser: the first paragraph of its docstring `doc` as the description, and --tiny
    (the size CI runs it at, described by `tiny_help`)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help=tiny_help)
    return parser


def add_arguments(parser):
    """Options both ComfyUI benchmarks take."""
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice, one per core)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time this process's CPU seconds, not wall-clock ones: steadier on a machine shared with "
                             "other work; with --threads 1 it is the compute alone (CPU runs only)")
    parser.add_argument("--pytorch-attention", action="store_true",
                        help="start ComfyUI as with --use-pytorch-cross-attention (its default on NVIDIA GPUs, not on CPU)")


def setup(args):
    """Apply the common options; return ComfyUI, the clock to time with and the clock's name for the report."""
    if args.threads:
        torch.set_num_threads(args.threads)
    comfy = import_comfy(pytorch_attention=args.pytorch_attention)
    if not args.cpu_time:
        return comfy, time.perf_counter, "wall-clock seconds"
    if torch.cuda.is_available():
        raise SystemExit("--cpu-time measures CPU work; on a GPU, time wall-clock seconds")
    return comfy, time.process_time, "CPU seconds of this process"


def device_and_dtype():
    """Where and in what precision the benchmarks run: fp16 on a GPU, fp32 on the CPU."""
    return (torch.device("cuda"), torch.float16) if torch.cuda.is_available() else (torch.device("cpu"), torch.float32)


def describe_run(rounds, clock_name, others, warmup=1):
    """The report's line on how it was measured."""
    from comfy.cli_args import args

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    flags = [flag for flag, on in (("--cpu", args.cpu),
                                   ("--use-pytorch-cross-attention", args.use_pytorch_cross_attention)) if on]
    return (f"torch {torch.__version__}, {device}, ComfyUI flags: {' '.join(flags) or 'none'}; {rounds} rounds after "
            f"{warmup} warm-up, interleaved, {clock_name}; other processes took {others:.0%} of the CPU meanwhile")


def interleaved(cases, rounds, clock=time.perf_counter, warmup=1):
    """Seconds per call of each case, {name: [one per round]}, and the share of the machine's CPU time that
    other processes took meanwhile (anything well above 0 skews wall-clock figures).

    Warm-up rounds (first calls fill caches and the allocator) are not kept.
    """
    times = {name: [] for name in cases}
    others = OtherProcesses()
    for kept, name in round_robin(cases, rounds, warmup):
        seconds = _time(cases[name], clock)
        if kept:
            times[name].append(seconds)
    return times, others.share()


def round_robin(names, rounds, warmup=1):
    """(kept, name) in the order to run them: every name once per round, each round starting one name later,
    so that drifts in the machine's load and any advantage of going first or after a given case fall on every
    case alike; `kept` is False in the first `warmup` rounds."""
    names = list(names)
    for index in range(warmup + rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            yield index >= warmup, name


class OtherProcesses:
    """The share of the machine's CPU time taken, from now on, by processes other than this one and `pids`
    (e.g. a server doing the measured work)."""

    def __init__(self, pids=()):
        self.pids = pids
        self.start = time.perf_counter()
        self.machine, self.ours = self._cpu_seconds()

    def share(self):
        machine, ours = self._cpu_seconds()
        others = (machine - self.machine) - (ours - self.ours)
        return max(others, 0) / ((time.perf_counter() - self.start) * os.cpu_count())

    def _cpu_seconds(self):
        """CPU seconds used so far by the whole machine (/proc/stat, Linux) and by this process and `pids`."""
        with open("/proc/stat") as f:
            ticks = [int(n) for n in f.readline().split()[1:9]]
        busy = sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait
        usage = resource.getrusage(resource.RUSAGE_SELF)
        theirs = sum(_process_ticks(pid) for pid in self.pids)
        return busy / os.sysconf("SC_CLK_TCK"), usage.ru_utime + usage.ru_stime + theirs / os.sysconf("SC_CLK_TCK")


def _process_ticks(pid):
    """User and system CPU ticks of a process (/proc/PID/stat fields 14 and 15, after the parenthesised name)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def _time(call, clock):
    if torch.cuda.is_available():
        torch.cuda.synchronize()  # GPU work is asynchronous: time what the call queued, not only the queuing
    start = clock()
    call()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return clock() - start


def ratios_to(times, baseline):
    """Each case divided by the baseline of the same round (a slow round slows both)."""
    return {name: [t / b for t, b in zip(values, times[baseline])] for name, values in times.items()}


def spread(values, digits=2):
    """'median (min-max)'."""
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"
