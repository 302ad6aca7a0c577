"""Training state on disk, for exact resume: the trainable weights, AdamW's moments, the warm-up
schedule, the fp16 loss scale and the step. Everything random is a function of (seed, step)
(plan.py, and the per-step seed of dropout), so the step is all the RNG state there is.

Written by process 0 as one full (unsharded) state dict, so a run may resume with another
process count as long as the global batch is the same; every process reads it back.
"""
import glob
import logging
import os

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

FORMAT = "deadiff-training-state"
log = logging.getLogger("deadiff")


def checkpoint_dir(output_dir):
    return os.path.join(output_dir, "checkpoints")


def checkpoint_path(output_dir, step):
    return os.path.join(checkpoint_dir(output_dir), f"step_{step:08d}.pt")


def latest_checkpoint(output_dir):
    found = sorted(glob.glob(os.path.join(checkpoint_dir(output_dir), "step_*.pt")))
    return found[-1] if found else None


def save_training_state(output_dir, step, model, optimizer, scheduler, scaler, fingerprint, processes, keep):
    """Called on every process (gathering a sharded model takes them all); process 0 writes."""
    model_sd, optimizer_sd = get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not processes.is_main:
        return None
    path = checkpoint_path(output_dir, step)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    state = {"format": FORMAT, "step": step, "fingerprint": fingerprint, "model": model_sd, "optimizer": optimizer_sd,
             "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict()}
    torch.save(state, f"{path}.partial")
    os.replace(f"{path}.partial", path)  # a crash while saving never leaves a truncated "latest"
    for old in sorted(glob.glob(os.path.join(checkpoint_dir(output_dir), "step_*.pt")))[:-keep] if keep > 0 else []:
        os.remove(old)
    return path


def load_training_state(path, model, optimizer, scheduler, scaler, fingerprint):
    """Restore everything saved; returns the step to continue from. Refuses a checkpoint of a run
    whose data order differs (seed, global batch, manifest, ratios, ...): it would not be a resume."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a DEADiff training checkpoint")
    differs = {k: (state["fingerprint"].get(k), v) for k, v in fingerprint.items() if state["fingerprint"].get(k) != v}
    if differs:
        listing = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in differs.items())
        raise ValueError(f"{path}: cannot resume, the run changed ({listing}); use a new output_dir or checkpoint.resume = \"none\"")
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                   options=StateDictOptions(full_state_dict=True))
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    return state["step"]


def resume_path(resume, output_dir):
    """checkpoint.resume: "auto" (the latest in output_dir, if any), "none", or a path."""
    if resume == "none":
        return None
    if resume == "auto":
        return latest_checkpoint(output_dir)
    if not os.path.isfile(resume):
        raise FileNotFoundError(f"checkpoint.resume: {resume} does not exist")
    return resume

