"""The training configuration: a JSON or TOML file whose sections map onto these dataclasses.

Unknown keys are refused by name (a typo must not silently train with a default). Paths are
relative to the config file's folder. Defaults follow docs/DESIGN.md, Training.
"""
import dataclasses
import os
from dataclasses import dataclass, field

from ..backbone import ModelConfig
from ..config_files import ConfigError, checked_config, load_checked_config, need, resolve
from ..data.manifest import KINDS
from ..layers import MODES
from ..precision import DTYPES

STARTS = ("random", "deadiff", "blip_diffusion")
STRATEGIES = ("ddp", "fsdp")


@dataclass
class StartConfig:
    source: str = "blip_diffusion"  # random | deadiff | blip_diffusion
    path: str = ""                  # DEADiff checkpoint/adapter, or BLIP-Diffusion file or folder
    qformer: dict = field(default_factory=dict)  # QFormerConfig fields for source = random
    proj_hidden: int = 3072         # ProjLayer width for source = random


@dataclass
class DataConfig:
    merged = ("ratios", "drop")     # a kind left out keeps its default
    manifest: str = ""
    resolution: int = 512
    ratios: dict = field(default_factory=lambda: {"style": 1.0, "content": 1.0, "recon": 1.0})
    drop: dict = field(default_factory=lambda: {"style": 0.15, "content": 0.15, "recon": 0.0})
    bad_rows: str = "skip"          # skip | fail
    workers: int = 2


@dataclass
class OptimConfig:
    lr: float = 1e-4
    warmup_steps: int = 10000
    weight_decay: float = 0.01
    betas: tuple = (0.9, 0.999)
    max_grad_norm: float = 0.0      # 0 = no clipping
    proj_dropout: float = 0.1       # the ProjLayers' dropout while training (docs/DESIGN.md, Encoder)
    batch_size: int = 8             # per process and micro-batch
    accumulation: int = 1
    max_steps: int = 100000


@dataclass
class CheckpointConfig:
    every: int = 1000
    keep: int = 3
    resume: str = "auto"            # auto (latest in output_dir, if any) | none | a checkpoint path
    export_every: int = 0           # also write an adapter every N steps (0 = only at the end)
    export_dtype: str = "fp16"


@dataclass
class ValidationConfig:
    every: int = 0                  # 0 = never
    references: list = field(default_factory=list)
    prompts: list = field(default_factory=list)
    mode: str = "style"
    negative: str = ""
    steps: int = 30
    cfg: float = 7.5
    sampler: str = "ddim"
    scheduler: str = "ddim_uniform"
    seed: int = 0


@dataclass
class DistributedConfig:
    strategy: str = "ddp"           # ddp | fsdp (shards the trainable weights and their optimizer state)
    backend: str = ""               # default: nccl on GPUs, gloo on CPUs


@dataclass
class TrainConfig:
    output_dir: str = "runs/deadiff"
    seed: int = 0
    precision: str = "bf16"
    gradient_checkpointing: bool = False
    log_every: int = 10
    model: ModelConfig = field(default_factory=ModelConfig)
    start: StartConfig = field(default_factory=StartConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    base_dir: str = field(default=".", repr=False, init=False)  # folder relative paths are resolved against

    def path(self, value):
        return resolve(self.base_dir, value)

    def check(self):
        need(self.precision in DTYPES, f"precision must be one of {', '.join(DTYPES)}, got {self.precision!r}")
        need(self.start.source in STARTS, f"start.source must be one of {STARTS}, got {self.start.source!r}")
        need(self.start.source == "random" or self.start.path, f"start.source = {self.start.source!r} needs start.path")
        need(bool(self.model.checkpoint) != bool(self.model.factory), "give exactly one of model.checkpoint and model.factory")
        need(bool(self.data.manifest), "data.manifest is required")
        need(self.data.resolution > 0 and self.data.resolution % 64 == 0, f"data.resolution must be a multiple of 64, got {self.data.resolution}")
        need(set(self.data.ratios) <= set(KINDS) and set(self.data.drop) <= set(KINDS), f"data.ratios / data.drop take the kinds {KINDS}")
        need(all(r >= 0 for r in self.data.ratios.values()) and sum(self.data.ratios.values()) > 0, "data.ratios must be >= 0 and not all 0")
        need(all(0 <= p <= 1 for p in self.data.drop.values()), "data.drop probabilities must be within 0..1")
        need(self.data.bad_rows in ("skip", "fail"), f"data.bad_rows must be skip or fail, got {self.data.bad_rows!r}")
        need(self.optim.batch_size >= 1 and self.optim.accumulation >= 1 and self.optim.max_steps >= 1, "optim.batch_size, accumulation and max_steps must be >= 1")
        need(self.distributed.strategy in STRATEGIES, f"distributed.strategy must be one of {STRATEGIES}")
        need(not (self.distributed.strategy == "fsdp" and self.precision == "fp16"), "fsdp trains in bf16 or fp32 (fp16 needs a sharded gradient scaler)")
        need(self.checkpoint.export_dtype in DTYPES, f"checkpoint.export_dtype must be one of {', '.join(DTYPES)}, got {self.checkpoint.export_dtype!r}")
        need(len(self.validation.references) > 0 and len(self.validation.prompts) > 0 or not self.validation.every,
             "validation.every needs validation.references and validation.prompts")
        need(self.validation.mode in MODES, f"validation.mode must be one of {', '.join(MODES)}")
        missing = [r for r in self.validation.references if not os.path.isfile(self.path(r))]
        need(not missing or not self.validation.every, f"validation reference(s) not found: {', '.join(missing)}")
        return self


def config_from_dict(values, base_dir="."):
    return checked_config(TrainConfig, values, base_dir)


def load_config(path):
    return load_checked_config(TrainConfig, path)


def as_dict(config):
    values = dataclasses.asdict(config)
    values.pop("base_dir")
    return values
