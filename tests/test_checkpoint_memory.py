"""Loading keeps only the copy resident, not the mmap-ed file's pages: the peak RSS of a load, measured in a
fresh process by the benchmark's own measurement (benchmarks/load_checkpoint.py)."""
import pytest

from benchmarks.load_checkpoint import measure  # the benchmark's own peak-RSS measurement
from deadiff_core.convert import convert
from deadiff_core.synthetic import TINY, OfficialLayout, official_state_dict, save_official_checkpoint

pytestmark = pytest.mark.no_comfyui  # core code only: ./scripts/test.sh runs it on one runtime

# a 175 MB official-layout file: large enough that the adapter (70-160 MB) dwarfs allocator noise
MEDIUM = OfficialLayout(vision_width=256, vision_blocks=6, hidden=256, qformer_layers=4, intermediate=1024, proj_hidden=1024)


@pytest.fixture(scope="module")
def medium_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("medium")
    files = {name: folder / name for name in ("warmup.ckpt", "official.ckpt", "adapter.safetensors")}
    save_official_checkpoint(files["warmup.ckpt"], official_state_dict(TINY, with_other_parts=False))
    save_official_checkpoint(files["official.ckpt"], official_state_dict(MEDIUM))
    convert(files["official.ckpt"], files["adapter.safetensors"], with_vision=True, dtype="fp32", progress=False)
    return files


@pytest.mark.parametrize("name, dtype, with_vision", [
    ("official.ckpt", "float32", True),      # was 2.08x: the adapter's file pages, both ViT copies
    ("official.ckpt", "float16", False),     # was 3.00x: fp32 pages for an fp16 copy
    ("adapter.safetensors", "float32", True),  # was 2.00x
])
def test_loading_keeps_only_the_copy_resident(medium_files, name, dtype, with_vision):
    """The mmap-ed file's pages are given back as each tensor is copied, so the peak is about the adapter itself."""
    result = measure(str(medium_files[name]), str(medium_files["warmup.ckpt"]), dtype, with_vision)
    assert result["peak_above_baseline"] < 1.4 * result["adapter_bytes"], result
