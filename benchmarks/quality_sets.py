"""The quality harness's test set: which reference goes with which prompt and seed.

A prompt file holds one prompt per line, optionally ending in `_SEED` (the official examples' format), with
`#` comments and optional `[section]` headers. A reference whose file name starts with a section's name
(`style_01.jpeg` -> `[style]`) is paired with that section's prompts; other references with the prompts
before any header. Every reference is paired with every prompt of its section.
"""
import os
import re
from dataclasses import dataclass

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
OFFICIAL_REFERENCES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                   "shared", "reference_images")
# what the reference gives when the harness picks the mode itself (the official examples' use)
DEFAULT_MODE = {"style": "style", "content": "content"}


@dataclass(frozen=True)
class Prompt:
    text: str
    seed: int
    section: str | None


@dataclass(frozen=True)
class Case:
    """One reference with one prompt: generated once per method."""
    reference: str  # path
    prompt: Prompt

    @property
    def reference_name(self):
        return os.path.splitext(os.path.basename(self.reference))[0]

    @property
    def default_mode(self):
        return DEFAULT_MODE.get(self.prompt.section, "style")


def read_prompts(path, default_seed):
    """[Prompt] from a prompt file (see the module's description)."""
    if not os.path.isfile(path):
        raise SystemExit(f"{path}: no such prompt file (pass --prompts FILE; see benchmarks/README.md)")
    prompts, section = [], None
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            header = re.fullmatch(r"\[(\w+)\]", line)
            if header:
                section = header.group(1).lower()
                continue
            text, seed = re.fullmatch(r"(.*?)(?:_(\d+))?", line).groups()
            prompts.append(Prompt(text.strip(), int(seed) if seed else default_seed, section))
    if not prompts:
        raise SystemExit(f"{path}: no prompts in it (one per line; see benchmarks/README.md)")
    return prompts


def reference_images(folder):
    paths = sorted(os.path.join(folder, name) for name in os.listdir(folder) if name.lower().endswith(IMAGE_EXTENSIONS))
    if not paths:
        raise SystemExit(f"{folder}: no reference images in it ({', '.join(IMAGE_EXTENSIONS)})")
    return paths


def cases(references_folder, prompts_path, default_seed=0):
    """Every (reference, prompt) pair of the set, references in name order."""
    if not os.path.isdir(references_folder):
        raise SystemExit(f"--references {references_folder}: no such folder")
    prompts = read_prompts(prompts_path, default_seed)
    sections = {p.section for p in prompts} - {None}
    found = []
    for reference in reference_images(references_folder):
        name = os.path.basename(reference).lower()
        section = next((s for s in sections if name.startswith(s)), None)
        paired = [p for p in prompts if p.section == section]
        if not paired:
            raise SystemExit(f"{reference}: no prompts for it in {prompts_path} (it matches no [section] by name, "
                             f"and no prompts stand before the first section header)")
        found += [Case(reference, prompt) for prompt in paired]
    return found
