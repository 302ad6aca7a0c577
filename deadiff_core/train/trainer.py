"""The training loop (docs/DESIGN.md, Training): paired data -> frozen encoders -> DEADiff objective -> AdamW, with
accumulation, mixed precision, checkpoints, validation images, logs and the final adapter."""
import json
import logging
import os
import time

import torch

from ..backbone import load_backbone
from ..comfy_patch import check_sd1_model
from ..comfy_runtime import import_comfy
from ..data.dataset import PairImages
from ..data.manifest import read_manifest
from ..layers import CONTENT, STYLE
from ..precision import DTYPES
from ..seeds import derived_seed
from .checkpoints import load_training_state, resume_path, save_training_state
from .config import as_dict
from .distributed import barrier, gradient_sync, mean_over_processes, parallelise, start_processes, stop_processes
from .export import export_adapter
from .frozen import FrozenEncoders, on_training_device
from .grad_checkpoint import enable_gradient_checkpointing
from .injection import PerSampleInjection, patched_transformer_options
from .metrics import TrainingLog
from .objective import DEADiffObjective, SD15NoiseSchedule
from .plan import LocalBatches, TrainingPlan, local_slice
from .start import load_start

log = logging.getLogger("deadiff")
BRANCH_KINDS = {STYLE: ("style", "recon"), CONTENT: ("content", "recon")}  # pair kinds whose reference feeds a branch
ADAPTER_NAME = "deadiff_adapter.safetensors"


def train(config, backbone=None):
    """Train (or resume) as configured; returns the exported adapter's path (on process 0)."""
    processes = start_processes(config.distributed.backend)
    try:
        return Trainer(config, processes, backbone).run()
    finally:
        stop_processes()


def _vision_model(backbone, start):
    """The CLIP vision tower: the configured/backbone one, else the start's own (DEADiff, BLIP-Diffusion)."""
    if backbone.clip_vision is not None:
        return backbone.clip_vision, False
    if start.vision_state_dict is None:
        raise ValueError("no CLIP vision model: set model.clip_vision (CLIP ViT-L/14), or start from a DEADiff / "
                         "BLIP-Diffusion file that carries its own vision tower")
    from ..comfy_vision import EmbeddedClipVision
    return EmbeddedClipVision(start.vision_state_dict), True


def _check_vision_width(frozen, vision, encoder):
    width = frozen.vision_states(torch.zeros(1, vision.image_size, vision.image_size, 3)).shape[-1]
    expected = next(iter(encoder.branches.values())).ln_vision.normalized_shape[0]
    if width != expected:
        raise ValueError(f"the CLIP vision model gives {width}-wide states but the Q-Formers read {expected}: "
                         "DEADiff needs CLIP ViT-L/14 (1024)")


class Trainer:
    def __init__(self, config, processes, backbone=None):
        import_comfy()
        self.config, self.processes, self.device = config, processes, processes.device
        self.output_dir = config.path(config.output_dir)
        optim, resolution = config.optim, config.data.resolution
        # the data first: a bad manifest should fail before minutes of model loading
        self.pairs = read_manifest(config.path(config.data.manifest), config.data.bad_rows)
        self.global_batch = optim.batch_size * optim.accumulation * processes.world_size
        self.plan = TrainingPlan(self.pairs, config.seed, config.data.ratios, config.data.drop, self.global_batch,
                                 (4, resolution // 8, resolution // 8))
        vision = self._set_up_models(backbone)
        self.dataset = PairImages(self.pairs, resolution, vision.image_size)
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.parameters, lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay)
        warmup = max(1, optim.warmup_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: min(1.0, (step + 1) / warmup))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")
        log.info("start: %s; %s trainable parameters; %d pairs; global batch %d (%d x %d accumulation x %d processes)",
                 self.start.description, f"{sum(p.numel() for p in self.parameters):,}", len(self.pairs), self.global_batch,
                 optim.batch_size, optim.accumulation, processes.world_size)

    def _set_up_models(self, backbone):
        """Frozen backbone on the device, the trainable start, the objective through the shared
        patches, wrapped for data parallelism; returns the CLIP vision model."""
        config = self.config
        self.backbone = on_training_device(backbone or load_backbone(config.model, config.path, config.precision), self.device)
        unet = self.backbone.model.model.diffusion_model
        self.start = load_start(config.start, unet, config.path, config.seed)
        check_sd1_model(self.backbone.model, self.start.projections)
        vision, self.vision_is_the_starts = _vision_model(self.backbone, self.start)
        for frozen in (self.backbone.vae.first_stage_model, self.backbone.clip.cond_stage_model, vision.model):
            frozen.requires_grad_(False)
        if config.gradient_checkpointing:
            log.info("gradient checkpointing on %d UNet blocks", enable_gradient_checkpointing(unet))
        self.frozen = FrozenEncoders(self.backbone, vision, self.device)
        _check_vision_width(self.frozen, vision, self.start.encoder)

        encoder, projections = self.start.encoder.to(self.device), self.start.projections.to(self.device)
        for branch in encoder.branches.values():
            branch.proj.dropout = config.optim.proj_dropout
        injection = PerSampleInjection(projections)
        options = patched_transformer_options(self.backbone.model, injection)
        self.objective = DEADiffObjective(encoder, projections, unet, options, injection, SD15NoiseSchedule())
        self.model = parallelise(self.objective, self.processes, config.distributed.strategy)
        return vision

    def fingerprint(self):
        """What fixes the data order: a checkpoint of a run that differs here cannot be resumed."""
        data = self.config.data
        return {"seed": self.config.seed, "global_batch": self.global_batch, "pairs": len(self.pairs),
                "resolution": data.resolution, "ratios": json.dumps(data.ratios, sort_keys=True),
                "drop": json.dumps(data.drop, sort_keys=True)}

    def run(self):
        config, processes = self.config, self.processes
        start_step = 0
        resume = resume_path(config.checkpoint.resume, self.output_dir)
        if resume:
            start_step = load_training_state(resume, self.model, self.optimizer, self.scheduler, self.scaler, self.fingerprint())
            log.info("resumed from %s at step %d", resume, start_step)
        if processes.is_main:
            os.makedirs(self.output_dir, exist_ok=True)
            with open(os.path.join(self.output_dir, "config.json"), "w") as f:
                json.dump(as_dict(config), f, indent=2)
        optim = config.optim
        loader = torch.utils.data.DataLoader(
            self.dataset, num_workers=config.data.workers, pin_memory=self.device.type == "cuda",
            batch_sampler=LocalBatches(self.plan, start_step, optim.max_steps, optim.accumulation, processes.rank,
                                       optim.batch_size, processes.world_size))
        batches = iter(loader)
        training_log = TrainingLog(self.output_dir, start_step, optim.max_steps, processes.is_main)
        try:
            for step in range(start_step, optim.max_steps):
                began = time.perf_counter()
                lr = self.scheduler.get_last_lr()[0]
                loss = self.optimizer_step(step, batches)
                done = step + 1
                samples_per_s = self.global_batch / (time.perf_counter() - began)
                write = done % config.log_every == 0 or done == optim.max_steps
                training_log.step(done, self.plan.kind_at(step), loss, lr, samples_per_s, write)
                self.periodic(done)
        finally:
            training_log.close()
        return self.export(os.path.join(self.output_dir, ADAPTER_NAME))

    def optimizer_step(self, step, batches):
        """One optimizer step over the global batch; returns its mean loss over all processes."""
        config, optim = self.config, self.config.optim
        draws = self.plan.draws(step)
        autocast = torch.autocast(self.device.type, dtype=DTYPES[config.precision], enabled=config.precision != "fp32")
        losses = []
        for micro in range(optim.accumulation):
            rows = local_slice(micro, self.processes.rank, optim.batch_size, self.processes.world_size)
            inputs = self.micro_batch(next(batches), draws, rows)
            torch.manual_seed(derived_seed(config.seed, "dropout", step, micro, self.processes.rank))
            with gradient_sync(self.model, enabled=micro == optim.accumulation - 1):
                with autocast:
                    loss = self.model(**inputs)
                self.scaler.scale(loss / optim.accumulation).backward()
            losses.append(loss.detach().float())
        if optim.max_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.parameters, optim.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return mean_over_processes(torch.stack(losses).mean().item(), self.processes)

    def micro_batch(self, batch, draws, rows):
        """The objective's inputs for this process's rows of the global batch (docs/DESIGN.md, Training: which
        branches see the reference, and the text, follow the pair kind)."""
        kind = draws.kind
        captions = ["" if kind == "recon" else self.pairs[i].caption for i in batch["index"].tolist()]
        sees_image = ~draws.dropped[rows]
        keep = {branch: sees_image & (kind in kinds) for branch, kinds in BRANCH_KINDS.items()}
        return {"vision": self.frozen.vision_states(batch["reference"]), "latents": self.frozen.latents(batch["target"]),
                "context": self.frozen.text(captions), "noise": draws.noise[rows].to(self.device),
                "timesteps": draws.timesteps[rows].to(self.device),
                "keep_style": keep[STYLE].to(self.device), "keep_content": keep[CONTENT].to(self.device)}

    def periodic(self, done):
        """Checkpoint, export, validation images when due; the other processes wait for process 0's
        writing (a resume must find the checkpoint complete)."""
        config = self.config

        def due(every):
            return every > 0 and done % every == 0
        wrote = False
        if due(config.checkpoint.every) or (config.checkpoint.every and done == config.optim.max_steps):
            save_training_state(self.output_dir, done, self.model, self.optimizer, self.scheduler, self.scaler,
                                self.fingerprint(), self.processes, config.checkpoint.keep)
            wrote = True
        if due(config.checkpoint.export_every):
            self.export(os.path.join(self.output_dir, "adapters", f"deadiff_step{done:08d}.safetensors"))
            wrote = True
        if due(config.validation.every):
            self.validate(done)
            wrote = True
        if wrote:
            barrier(self.processes)

    def trained_state(self):
        """Full (unsharded) trained weights on the CPU: (encoder state, projections state)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        split = {"encoder.": {}, "projections.": {}}
        for key, tensor in state.items():
            prefix = "encoder." if key.startswith("encoder.") else "projections."
            split[prefix][key[len(prefix):]] = tensor
        return split["encoder."], split["projections."]

    def export(self, path):
        """Every process takes part (the weights may be sharded); process 0 writes."""
        encoder_state, projection_state = self.trained_state()
        if not self.processes.is_main:
            return None
        vision = self.start.vision_state_dict if self.vision_is_the_starts else None
        metadata = export_adapter(path, encoder_state, projection_state, vision, self.config.checkpoint.export_dtype,
                                  source_name=f"deadiff-trained-{os.path.basename(self.output_dir)}")
        log.info("wrote %s (%s, vision %s)", path, metadata["dtype"], metadata["has_vision"])
        return path

    def validate(self, done):
        if not self.processes.is_main:
            return
        if self.config.distributed.strategy == "fsdp" and self.processes.world_size > 1:
            log.warning("validation images are not sampled under FSDP (the weights are sharded); export_every gives "
                        "adapters to try in ComfyUI instead")
            return
        from .validation import sample_validation_images

        folder = os.path.join(self.output_dir, "validation", f"step_{done:08d}")
        written = sample_validation_images(folder, self.config.validation, self.backbone, self.frozen, self.objective.encoder,
                                           self.objective.projections, self.config.data.resolution, self.device, self.config.path)
        log.info("validation: %d images in %s", len(written), folder)
