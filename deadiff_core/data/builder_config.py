"""The data builder's configuration (JSON or TOML): which prompts to render, with which model and
sampler, and how to pair the images (docs/DESIGN.md, Training: subjects x style descriptions, generated, paired)."""
from dataclasses import dataclass, field

from ..backbone import ModelConfig
from ..config_files import ConfigError, load_checked_config, need, resolve
from ..precision import DTYPES


@dataclass
class SamplingConfig:
    steps: int = 30
    cfg: float = 7.5
    sampler: str = "euler"          # a deterministic sampler: an image is then a function of its own seed
    scheduler: str = "normal"
    width: int = 512
    height: int = 512
    batch_size: int = 4
    negative: str = "lowres, blurry, worst quality, jpeg artifacts"


@dataclass
class PairingConfig:
    per_target: int = 1             # style and content references drawn for each target image
    # Captions hold what the reference does not give: a style pair's reference brings the style, so
    # its caption is the target's subject; a content pair's brings the subject, so its caption is the
    # target's style (what DEADiff's style and content modes are later prompted with).
    style_caption: str = "{subject}"
    content_caption: str = "{style}"
    recon: bool = True


@dataclass
class SimilarityConfig:
    clip: str = ""                  # a local Hugging Face CLIP folder (e.g. openai/clip-vit-large-patch14); "" = pair at random
    min_score: float = -1.0         # drop pairs scoring lower (cosine, -1..1)


@dataclass
class BuilderConfig:
    output_dir: str = "deadiff_pairs"
    subjects: list = field(default_factory=list)
    styles: list = field(default_factory=list)
    prompt: str = "{subject}, {style}"
    images_per_prompt: int = 1
    seed: int = 0
    precision: str = "fp16"         # weights of the generating model
    model: ModelConfig = field(default_factory=ModelConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    pairs: PairingConfig = field(default_factory=PairingConfig)
    similarity: SimilarityConfig = field(default_factory=SimilarityConfig)
    base_dir: str = field(default=".", repr=False, init=False)

    def path(self, value):
        return resolve(self.base_dir, value)

    def check(self):
        need(len(self.subjects) >= 2 and len(self.styles) >= 2, "give at least 2 subjects and 2 styles (pairs need both to vary)")
        need(len(set(self.subjects)) == len(self.subjects) and len(set(self.styles)) == len(self.styles), "subjects and styles must be unique")
        need(all(isinstance(t, str) and t.strip() for t in [*self.subjects, *self.styles]), "subjects and styles must be non-empty text")
        for name in ("prompt", "pairs.style_caption", "pairs.content_caption"):
            template = self.prompt if name == "prompt" else getattr(self.pairs, name.split(".")[1])
            try:
                template.format(subject="s", style="t")
            except (KeyError, IndexError, ValueError) as e:
                raise ConfigError(f"{name} {template!r}: use only {{subject}} and {{style}} ({e})") from None
        need(bool(self.model.checkpoint) != bool(self.model.factory), "give exactly one of model.checkpoint and model.factory")
        need(self.sampling.width % 64 == 0 and self.sampling.height % 64 == 0, "sampling.width and height must be multiples of 64")
        need(self.images_per_prompt >= 1 and self.sampling.batch_size >= 1 and self.pairs.per_target >= 1,
             "images_per_prompt, sampling.batch_size and pairs.per_target must be >= 1")
        need(self.precision in DTYPES, f"precision must be one of {', '.join(DTYPES)}, got {self.precision!r}")
        return self


def load_builder_config(path):
    return load_checked_config(BuilderConfig, path)
