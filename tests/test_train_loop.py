"""The trainer on a tiny random SD1.5 (ComfyUI's own classes) and a small paired manifest: it
learns, freezes what must stay frozen, resumes exactly, scales out with the same result, and its
adapter is one DEADiffLoader reads."""
import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from support.paths import COMFYUI_PATH, REPO_ROOT
from support.training import config_values, make_config, trainer, write_pairs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_pairs(str(tmp_path_factory.mktemp("pairs")))


def first_micro_batch(t):
    draws = t.plan.draws(0)
    rows = t.plan.rows(0)[: t.config.optim.batch_size]
    batch = torch.utils.data.default_collate([t.dataset[i] for i in rows.tolist()])
    return t.micro_batch(batch, draws, slice(0, len(rows)))


def test_overfits_a_fixed_batch(comfy, manifest, tmp_path):
    """A fixed batch (images, captions, timesteps, noise) repeated: the loss falls by more than half.

    A frozen *random* UNet cannot predict arbitrary noise through any conditioning (its untrained
    output head caps how much of ε it can explain), so the noise here is what a teacher predicts:
    the same UNet with DEADiff weights perturbed from the student's start. A loss of 0 is then
    reachable, and only the trainable path (Q-Formers, ProjLayers, i_to_k/v) can get there.
    """
    from deadiff_core.train.injection import PerSampleInjection, patched_transformer_options

    t = trainer(make_config(manifest, tmp_path, optim={"lr": 1e-3, "warmup_steps": 1, "proj_dropout": 0.0, "weight_decay": 0.0}))
    inputs = first_micro_batch(t)
    objective = t.objective
    teacher_encoder, teacher_projections = copy.deepcopy(objective.encoder).eval(), copy.deepcopy(objective.projections)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in (p for p in [*teacher_encoder.parameters(), *teacher_projections.parameters()] if p.requires_grad):
            p.add_(torch.randn(p.shape, generator=g) * 0.5 * p.std())
        injection = PerSampleInjection(teacher_projections)
        options = patched_transformer_options(t.backbone.model, injection)
        injection.set_batch(teacher_encoder(inputs["vision"]), {"style": inputs["keep_style"], "content": inputs["keep_content"]})
        noisy = torch.randn(inputs["latents"].shape, generator=g)
        noise = objective.frozen.unet(noisy, inputs["timesteps"].float(), context=inputs["context"], transformer_options=options)
        alpha = objective.frozen.schedule.alphas_cumprod[inputs["timesteps"]].float().view(-1, 1, 1, 1)
        inputs.update(noise=noise, latents=(noisy - (1 - alpha).sqrt() * noise) / alpha.sqrt())  # so x_t = noisy
    losses = []
    for _ in range(15):
        loss = t.model(**inputs)
        loss.backward()
        t.optimizer.step()
        t.optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_each_pair_kind_feeds_its_branches_and_text_as_the_spec_says(comfy, manifest, tmp_path):
    """Spec §4: style pairs feed the style branch (content gets zeros) with the caption, content pairs the
    reverse, reconstructions both with the text ""; dropped rows get zeros in both branches."""
    t = trainer(make_config(manifest, tmp_path, data={"manifest": manifest, "resolution": 64, "workers": 0,
                                                      "drop": {"style": 0.5, "content": 0.5}}))
    spec = {"style": (True, False, True), "content": (False, True, True), "recon": (True, True, False)}  # style, content, caption
    seen = set()
    for step in range(12):
        draws, rows = t.plan.draws(step), t.plan.rows(step)
        batch = torch.utils.data.default_collate([t.dataset[i] for i in rows.tolist()])
        inputs = t.micro_batch(batch, draws, slice(0, 2))
        style, content, captioned = spec[draws.kind]
        kept = ~draws.dropped
        assert torch.equal(inputs["keep_style"], kept & style) and torch.equal(inputs["keep_content"], kept & content)
        captions = [t.pairs[i].caption if captioned else "" for i in rows.tolist()]
        assert torch.equal(inputs["context"], t.frozen.text(captions))
        assert {t.pairs[i].kind for i in rows.tolist()} == {draws.kind}
        seen |= {(draws.kind, bool(d)) for d in draws.dropped}
    assert {kind for kind, _ in seen} == {"style", "content", "recon"} and ("style", True) in seen and ("recon", True) not in seen


def test_frozen_weights_stay_bit_identical_and_every_trainable_one_changes(comfy, manifest, tmp_path):
    from deadiff_core.train.tiny import tiny_backbone

    backbone = tiny_backbone(seed=5)
    recon_only = {"ratios": {"style": 0, "content": 0, "recon": 1}}  # both branches see the reference every step
    t = trainer(make_config(manifest, tmp_path, optim={"batch_size": 1, "accumulation": 2, "max_steps": 2},
                            data={"manifest": manifest, "resolution": 64, "workers": 0, **recon_only}), backbone)
    frozen_modules = {"unet": backbone.model.model, "vae": backbone.vae.first_stage_model, "text": backbone.clip.cond_stage_model,
                      "vision": backbone.clip_vision.model,
                      **{f"ln_vision.{b}": m.ln_vision for b, m in t.objective.encoder.branches.items()}}
    before = {name: {k: v.clone() for k, v in m.state_dict().items()} for name, m in frozen_modules.items()}
    trainable = {name: p.detach().clone() for name, p in t.objective.named_parameters() if p.requires_grad}
    assert {n.split(".")[0] for n in trainable} == {"encoder", "projections"}
    assert sum(".i_to_" in n for n in trainable) == 32 and not any("ln_vision" in n for n in trainable)
    assert sum("query_tokens" in n for n in trainable) == 2
    t.run()
    for name, module in frozen_modules.items():
        after = module.state_dict()
        assert all(torch.equal(after[k], v) for k, v in before[name].items()), name
    params = dict(t.objective.named_parameters())
    unchanged = {n for n, v in trainable.items() if torch.equal(params[n].detach(), v)}
    # the last Q-Former layer's text-side feed-forward feeds nothing that is read (only the 16 query
    # rows are): zero gradients, so its zero-initialised biases stay 0 (its weights move by weight decay)
    assert unchanged == {f"encoder.branches.{b}.qformer.encoder.layer.0.{name}.bias" for b in ("style", "content")
                         for name in ("intermediate.dense", "output.dense", "output.LayerNorm")}


def test_resume_reproduces_the_uninterrupted_run_exactly(comfy, manifest, tmp_path):
    from deadiff_core.train.metrics import read_losses
    from deadiff_core.train.trainer import train

    steps = {"optim": {"max_steps": 6, "batch_size": 2}, "checkpoint": {"every": 3, "export_dtype": "fp32", "resume": "auto"}}
    train(make_config(manifest, tmp_path / "whole", **steps))
    interrupted = make_config(manifest, tmp_path / "parts", optim={"max_steps": 3, "batch_size": 2}, checkpoint=steps["checkpoint"])
    train(interrupted)
    assert sorted(os.listdir(tmp_path / "parts" / "checkpoints")) == ["step_00000003.pt"]
    train(make_config(manifest, tmp_path / "parts", **steps))  # resume: auto picks step 3
    whole, parts = read_losses(tmp_path / "whole"), read_losses(tmp_path / "parts")
    assert list(parts) == [1, 2, 3, 4, 5, 6] and parts == whole  # exactly, dropout and data order included
    a = load_file(tmp_path / "whole" / "deadiff_adapter.safetensors")
    b = load_file(tmp_path / "parts" / "deadiff_adapter.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    changed = make_config(manifest, tmp_path / "parts", optim={"max_steps": 6, "batch_size": 1}, checkpoint=steps["checkpoint"])
    with pytest.raises(ValueError, match="global_batch"):
        train(changed)


def run_cli(arguments, timeout=600, env=None):
    environment = dict(os.environ, COMFYUI_PATH=COMFYUI_PATH, PYTHONPATH=REPO_ROOT, OMP_NUM_THREADS="1", **(env or {}))
    done = subprocess.run([sys.executable, *arguments], cwd=REPO_ROOT, env=environment, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def torchrun(config_values_, path):
    path.write_text(json.dumps(config_values_))
    run_cli(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "deadiff_core.train",
             "--config", str(path)])


def test_two_gloo_processes_equal_one_process_and_accumulation(comfy, manifest, tmp_path):
    """Global batch 2: two processes x 1 (torchrun on gloo, DDP; FSDP for two steps, resumed by one
    process), one process x 2, one process x 1 x 2 accumulation steps; the trained weights agree to
    float round-off."""
    from deadiff_core.train.metrics import read_losses
    from deadiff_core.train.trainer import train

    no_checkpoints = {"checkpoint": {"every": 0, "export_dtype": "fp32", "resume": "none"}}
    dropout_off = {"proj_dropout": 0.0, "max_steps": 3}  # dropout masks depend on how rows split into processes
    torchrun(config_values(manifest, tmp_path / "ddp", optim={**dropout_off, "batch_size": 1}, **no_checkpoints),
             tmp_path / "ddp.json")
    torchrun(config_values(manifest, tmp_path / "fsdp", optim={**dropout_off, "batch_size": 1, "max_steps": 2},
                           checkpoint={"every": 2, "export_dtype": "fp32", "resume": "none"}, distributed={"strategy": "fsdp"}),
             tmp_path / "fsdp.json")
    train(make_config(manifest, tmp_path / "fsdp", optim={**dropout_off, "batch_size": 2},
                      checkpoint={"every": 0, "export_dtype": "fp32", "resume": "auto"}))
    train(make_config(manifest, tmp_path / "one", optim={**dropout_off, "batch_size": 2}, **no_checkpoints))
    train(make_config(manifest, tmp_path / "accumulated", optim={**dropout_off, "batch_size": 1, "accumulation": 2},
                      **no_checkpoints))

    reference = load_file(tmp_path / "one" / "deadiff_adapter.safetensors")
    for run in ("ddp", "fsdp", "accumulated"):
        other = load_file(tmp_path / run / "deadiff_adapter.safetensors")
        differences = torch.cat([(other[k].float() - reference[k].float()).abs().flatten() for k in reference])
        # Adam divides by sqrt(v): where a gradient is ~0, round-off in its sum moves a weight by up to ~1e-5;
        # a wrong row, noise or reduction would move most weights by ~lr (1e-3)
        assert differences.max() < 1e-4 and (differences > 1e-6).float().mean() < 1e-3, (run, differences.max())
        losses, reference_losses = read_losses(tmp_path / run), read_losses(tmp_path / "one")
        assert losses.keys() == reference_losses.keys()
        assert all(abs(losses[s] - reference_losses[s]) < 1e-6 for s in losses), (run, losses, reference_losses)


def test_command_line_with_a_toml_config_bf16_gradient_checkpointing_and_validation_images(comfy, manifest, tmp_path):
    reference = os.path.join(os.path.dirname(manifest), "img0.png")
    (tmp_path / "train.toml").write_text(f"""
output_dir = "run"
precision = "bf16"
gradient_checkpointing = true
log_every = 1

[model]
factory = "deadiff_core.train.tiny:tiny_backbone"

[start]
source = "random"
proj_hidden = 64
qformer = {{ num_layers = 1, intermediate_size = 64, vocab_size = 4200, max_positions = 16 }}

[data]
manifest = "{manifest}"
resolution = 64
workers = 1

[optim]
batch_size = 2
max_steps = 2

[checkpoint]
every = 1
keep = 1

[validation]
every = 2
references = ["{reference}"]
prompts = ["a lighthouse", "a cat"]
steps = 2
""")
    done = run_cli(["-m", "deadiff_core.train", "--config", str(tmp_path / "train.toml")])
    run = tmp_path / "run"
    assert done.stdout.strip().endswith(f"adapter: {run / 'deadiff_adapter.safetensors'}")
    assert "gradient checkpointing on 38 UNet blocks" in done.stderr
    assert "TensorBoard is not installed: logging to CSV only" in done.stderr or (run / "tensorboard").is_dir()
    assert sorted(os.listdir(run / "checkpoints")) == ["step_00000002.pt"]
    images = sorted(os.listdir(run / "validation" / "step_00000002"))
    assert images == ["reference0_prompt0.png", "reference0_prompt1.png"]
    assert Image.open(run / "validation" / "step_00000002" / images[0]).size == (64, 64)
    losses = (run / "log.csv").read_text().splitlines()
    assert losses[0] == "step,kind,loss,lr,samples_per_s" and len(losses) == 3
    assert all(np.isfinite(float(line.split(",")[2])) for line in losses[1:])


def test_bad_configs_are_refused_with_the_key_named(tmp_path):
    (tmp_path / "typo.json").write_text(json.dumps({"model": {"factory": "x:y"}, "data": {"manifest": "m.jsonl"},
                                                    "optim": {"learning_rate": 1e-4}}))
    done = subprocess.run([sys.executable, "-m", "deadiff_core.train", "--config", str(tmp_path / "typo.json")],
                          cwd=REPO_ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO_ROOT))
    assert done.returncode == 2 and "unknown key(s) learning_rate in [optim]" in done.stderr

    from deadiff_core.train.config import ConfigError, config_from_dict
    good = {"model": {"checkpoint": "sd15.safetensors"}, "data": {"manifest": "m"}, "start": {"source": "random"}}
    config_from_dict(good)
    for changes, message in (({"model": {}}, "exactly one of model.checkpoint and model.factory"),
                             ({"data": {"manifest": "m", "resolution": 500}}, "multiple of 64"),
                             ({"data": {"manifest": "m", "drop": {"style": 2}}}, "within 0..1"),
                             ({"start": {"source": "deadiff"}}, "needs start.path"),
                             ({"precision": "fp8"}, "precision must be one of"),
                             ({"distributed": {"strategy": "fsdp"}, "precision": "fp16"}, "fsdp trains in bf16 or fp32")):
        with pytest.raises(ConfigError, match=message):
            config_from_dict({**good, **changes})
