"""Whole generations through a real ComfyUI server: plain SD1.5 against DEADiff, cold and warm, side by side.

    python -m benchmarks.generation [--tiny] [--rounds N] [--size PX] [--steps N]

Starts ComfyUI on 127.0.0.1 in a temporary base directory with this pack in custom_nodes, writes random-weight
files in the real formats (a full SD1.5 checkpoint in fp16; a DEADiff file in the official deadiff_v1.ckpt layout:
both BLIP models with their ViT copies, both ProjLayers and the 32 i_to_k/v, without the UNet, VAE and text
encoder that the loader never reads) and a reference image, and runs the graph users build: Load Checkpoint ->
(Load DEADiff Model, Encode Reference, Apply) -> KSampler (DDIM, ddim_uniform, CFG 8, batch 1) -> VAE Decode ->
Save Image. Each round, for plain SD1.5 and for DEADiff in turn: /free (unload the models, drop ComfyUI's output
cache), a cold run that loads everything, then a warm run with a new seed, where ComfyUI's cache should leave only
sampling, decoding and saving. Seconds are the server's own (its history timestamps); a node's seconds run from the
server announcing it on its websocket to announcing the next one.
"""
import asyncio
import itertools
import json
import os
import statistics
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass

import aiohttp

from benchmarks.harness import OtherProcesses, ROOT, command_line, describe_run, ratios_to, round_robin, spread
from deadiff_core.comfy_runtime import comfyui_path, import_comfy
from deadiff_core.synthetic import VIT_L_TINY, OfficialLayout
from scripts.comfy_server import ComfyServer
from scripts.graphs import CHECKPOINT, DEADIFF, graph, install_models
from scripts.run_workflow import execution_error, queue_prompt, wait_for

PIPELINES = {"plain SD1.5": False, "DEADiff": True}  # name -> with DEADiff
COLD, WARM = "cold", "warm"
ENCODER_NODES = ("DEADiffLoader", "DEADiffEncode")


@dataclass
class Run:
    seconds: float          # the server's, from execution_start to execution_success
    node_seconds: dict      # node id -> seconds, for the nodes that ran
    cached: list            # node ids ComfyUI took from its cache


def timed_run(server, prompt, timeout=1800):
    return asyncio.run(_timed_run(server.url, prompt, timeout))


async def _timed_run(url, prompt, timeout):
    """Queue the prompt with a client id of our own, so that the server tells us when each node starts."""
    client_id = uuid.uuid4().hex
    starts = []  # (node id, when the server announced it), closed by (None, when it finished)
    async with aiohttp.ClientSession() as session, asyncio.timeout(timeout):
        async with session.ws_connect(f"{url}/ws?clientId={client_id}") as ws:
            # a blocking call is fine here: the server's messages wait in the socket until the loop reads them
            prompt_id, error = queue_prompt(url, prompt, client_id)
            if error:
                raise RuntimeError(f"ComfyUI refused the prompt: {error}")
            async for message in ws:
                event = json.loads(message.data) if message.type == aiohttp.WSMsgType.TEXT else {}  # else previews
                data = event.get("data") or {}
                if data.get("prompt_id") != prompt_id:
                    continue
                if event["type"] == "executing":
                    starts.append((data["node"], time.perf_counter()))
                elif event["type"] in ("execution_success", "execution_error", "execution_interrupted"):
                    starts.append((None, time.perf_counter()))
                    break
    entry = wait_for(url, prompt_id, timeout)
    error = execution_error(entry)
    if error:
        raise RuntimeError(f"the prompt failed: {error}")
    messages = dict(entry["status"]["messages"])
    return Run(seconds=(messages["execution_success"]["timestamp"] - messages["execution_start"]["timestamp"]) / 1000,
               node_seconds={node: end - start for (node, start), (_, end) in zip(starts, starts[1:])},
               cached=messages["execution_cached"]["nodes"])


def measure(server, rounds, warmup, size, steps, run=timed_run):
    """{(pipeline, COLD or WARM): [Run per round]}, pipelines interleaved, and the other processes' CPU share.
    `run(server, prompt)` queues one prompt and returns its Run (gpu_check.py wraps timed_run to read VRAM too)."""
    runs = {(name, state): [] for name in PIPELINES for state in (COLD, WARM)}
    seeds = itertools.count(1)
    others = OtherProcesses(pids=[server.process.pid])
    for kept, name in round_robin(PIPELINES, rounds, warmup):
        server.free()
        for state in (COLD, WARM):
            result = run(server, graph(with_deadiff=PIPELINES[name], seed=next(seeds), size=size, steps=steps))
            if kept:
                runs[name, state].append(result)
    return runs, others.share()


def check_cold(runs):
    """A cold run that found anything in ComfyUI's cache would not measure loading."""
    for name in PIPELINES:
        if any(run.cached for run in runs[name, COLD]):
            raise SystemExit(f"{name}: a cold run took nodes from ComfyUI's cache although /free came before it")


def cached_classes(run, prompt):
    """'LoaderA, LoaderB x2' for the nodes a run took from ComfyUI's cache."""
    counts = Counter(prompt[node]["class_type"] for node in sorted(run.cached, key=int))
    return ", ".join(f"{name} x{n}" if n > 1 else name for name, n in counts.items()) or "none"


def report_totals(runs, prompts):
    print("| run | seconds (median, min-max) | DEADiff / plain SD1.5, same round (median, min-max) | "
          "nodes taken from ComfyUI's cache |")
    print("| --- | --- | --- | --- |")
    for state in (COLD, WARM):
        times = {name: [run.seconds for run in runs[name, state]] for name in PIPELINES}
        ratios = ratios_to(times, "plain SD1.5")
        for name in PIPELINES:
            cached = " / ".join(dict.fromkeys(cached_classes(run, prompts[name]) for run in runs[name, state]))
            print(f"| {name}, {state} | {spread(times[name])} | {spread(ratios[name], 3)} | {cached} |")


def report_nodes(runs, prompt):
    """Median seconds per node of the DEADiff graph in every run ("cached" where ComfyUI skipped it)."""
    columns = [(name, state) for state in (COLD, WARM) for name in PIPELINES]
    print("\n| node | " + " | ".join(f"{name}, {state}" for name, state in columns) + " |")
    print("| --- |" + " --- |" * len(columns))
    for node in sorted(prompt, key=int):
        cells = []
        for column in columns:
            seconds = [run.node_seconds[node] for run in runs[column] if node in run.node_seconds]
            cached = all(node in run.cached for run in runs[column])
            cells.append(f"{statistics.median(seconds):.2f}" if seconds else "cached" if cached else "-")
        print(f"| {node} {prompt[node]['class_type']} | " + " | ".join(cells) + " |")


def encoder_cached_rounds(runs, prompt):
    """In how many warm DEADiff runs ComfyUI took the DEADiff loader and encoder from its cache."""
    nodes = [node for node, inputs in prompt.items() if inputs["class_type"] in ENCODER_NODES]
    return sum(all(node in run.cached for node in nodes) for run in runs["DEADiff", WARM])


def main():
    parser = command_line(__doc__, "for CI: 64 px, 1 step, 1 round and no warm-up, a DEADiff file with one ViT block and one "
                                   "Q-Former layer (the SD1.5 checkpoint stays full size: ComfyUI only detects SD1.5 at its real width)")
    parser.add_argument("--rounds", type=int, help="timed rounds after one warm-up round (default 5, --tiny 1)")
    parser.add_argument("--size", type=int, help="image side in pixels (default 256, --tiny 64)")
    parser.add_argument("--steps", type=int, help="sampling steps (default 4, --tiny 1)")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.tiny else 5)
    warmup = 0 if args.tiny else 1
    size = args.size or (64 if args.tiny else 256)
    steps = args.steps or (1 if args.tiny else 4)
    comfy = import_comfy()  # to write the SD1.5 checkpoint with ComfyUI's own classes

    with tempfile.TemporaryDirectory() as base_dir:
        server = ComfyServer(comfyui_path(), ROOT, base_dir)
        try:
            install_models(comfy, server, VIT_L_TINY if args.tiny else OfficialLayout())
            runs, others = measure(server, rounds, warmup, size, steps)
        finally:
            server.stop()
        sizes = {name: os.path.getsize(server.model_path(folder, name)) / 2**30
                 for folder, name in (("checkpoints", CHECKPOINT), ("deadiff", DEADIFF))}
    check_cold(runs)

    prompts = {name: graph(with_deadiff=with_deadiff) for name, with_deadiff in PIPELINES.items()}
    print(f"Generation through ComfyUI's server: {size}x{size} px, {steps} DDIM steps (ddim_uniform), CFG 8, batch 1; "
          f"SD1.5 checkpoint {sizes[CHECKPOINT]:.2f} GiB (fp16), DEADiff file {sizes[DEADIFF]:.2f} GiB (official "
          f"layout); {describe_run(rounds, 'seconds the server took (history timestamps)', others, warmup)}")
    report_totals(runs, prompts)
    print(f"\nDEADiff, warm: Load DEADiff Model and DEADiff Encode Reference taken from ComfyUI's cache in "
          f"{encoder_cached_rounds(runs, prompts['DEADiff'])} of {rounds} rounds")
    report_nodes(runs, prompts["DEADiff"])


if __name__ == "__main__":
    main()
