"""The converter CLI: what it keeps and drops, its metadata, its refusals, and a full-size round trip."""
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from deadiff_core.checkpoint import load_adapter
from deadiff_core.synthetic import OfficialLayout, official_state_dict, save_official_checkpoint
from support.layout_spec import spec_adapter_keys, spec_image_projection_keys, spec_vision_keys
from support.paths import REPO_ROOT

pytestmark = pytest.mark.no_comfyui  # core code only: ./scripts/test.sh runs it on one runtime

DROPPED_PREFIXES = ("style_blip.Qformer.cls.", "content_blip.Qformer.cls.", "model.diffusion_model.input_blocks.0",
                    "first_stage_model.", "cond_stage_model.", "betas", "alphas_cumprod", "ctx_embeddings_cache")


def run_convert(*args):
    """As the README says: `python -m deadiff_core.convert ...` from the pack's folder."""
    return subprocess.run([sys.executable, "-m", "deadiff_core.convert", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO_ROOT)


def read(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


@pytest.mark.fast
def test_keeps_the_adapter_with_official_names_and_drops_the_rest(tmp_path, tiny_ckpt, tiny_state_dict):
    out = tmp_path / "adapter.safetensors"
    result = run_convert(tiny_ckpt, out, "--with-vision", "--dtype", "fp16")
    assert result.returncode == 0, result.stderr
    assert "converting" in result.stderr  # progress bar
    tensors, metadata = read(out)
    assert metadata == {"format": "deadiff-adapter", "version": "1", "branches": "style,content", "has_vision": "true",
                        "dtype": "fp16", "source": tiny_ckpt.name}
    vision = {k for k in tensors if ".visual_encoder." in k}
    assert vision and all(k.startswith("style_blip.visual_encoder.") for k in vision)  # one copy only
    for key in tensors:
        assert not key.startswith(DROPPED_PREFIXES), key
        assert not any(part in key for part in ("vision_proj", "text_proj", "itm_head", ".temp", ".attn2.to_k.")), key
    assert sum(".i_to_" in k for k in tensors) == 32
    for key, tensor in tensors.items():
        original = tiny_state_dict[key]
        if original.is_floating_point():
            assert tensor.dtype == torch.float16 and torch.equal(tensor, original.half()), key
        else:
            assert torch.equal(tensor, original), key
    adapter = load_adapter(out)
    assert adapter.info.source_format == "adapter safetensors" and adapter.info.has_vision


@pytest.mark.fast
def test_without_vision_and_single_branch(tmp_path):
    src = tmp_path / "style_only.ckpt"
    save_official_checkpoint(src, official_state_dict(branches=("style",)))
    out = tmp_path / "style.safetensors"
    assert run_convert(src, out, "--dtype", "bf16").returncode == 0
    tensors, metadata = read(out)
    assert (metadata["branches"], metadata["has_vision"], metadata["dtype"]) == ("style", "false", "bf16")
    assert not any("visual_encoder" in k or k.startswith("content") for k in tensors)
    assert load_adapter(out).info.branches == ("style",)


@pytest.mark.fast
def test_never_overwrites_without_force(tmp_path, tiny_ckpt):
    out = tmp_path / "adapter.safetensors"
    out.write_bytes(b"precious")
    result = run_convert(tiny_ckpt, out)
    assert result.returncode == 2 and "--force" in result.stderr
    assert out.read_bytes() == b"precious"
    assert run_convert(tiny_ckpt, out, "--force").returncode == 0
    assert read(out)[1]["format"] == "deadiff-adapter"


@pytest.mark.fast
def test_bad_source_is_a_clear_error(tmp_path):
    src = tmp_path / "v1-5.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.out.2.weight": torch.zeros(4, 320, 3, 3)}}, src)
    out = tmp_path / "x.safetensors"
    result = run_convert(src, out)
    assert result.returncode == 2
    assert "not DEADiff" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists() and not (tmp_path / "x.safetensors.partial").exists()


def test_full_size_round_trip_is_exact(tmp_path):
    """A random full-size encoder checkpoint in the official layout (both branches, both ViT copies)."""
    sd = official_state_dict(OfficialLayout(), seed=5, with_other_parts=False)
    src, out = tmp_path / "deadiff_v1.ckpt", tmp_path / "adapter.safetensors"
    save_official_checkpoint(src, sd)
    assert run_convert(src, out, "--with-vision", "--dtype", "fp32").returncode == 0
    tensors, _ = read(out)
    expected_keys = {**spec_adapter_keys("style"), **spec_adapter_keys("content"),
                     **spec_image_projection_keys(), **spec_vision_keys("style")}
    assert set(tensors) == set(expected_keys)
    for key, tensor in tensors.items():
        assert torch.equal(tensor, sd[key].to(tensor.dtype)) and tensor.dtype in (torch.float32, torch.int64), key
    del sd, tensors  # keep the peak well inside CI's 24 GB

    official, converted = load_adapter(src), load_adapter(out)
    for a, b in ((official.encoder, converted.encoder), (official.projections, converted.projections)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert official.vision_state_dict.keys() == converted.vision_state_dict.keys()
    assert all(torch.equal(official.vision_state_dict[k].float(), converted.vision_state_dict[k]) for k in official.vision_state_dict)
    x = torch.randn(2, 257, 1024)
    with torch.no_grad():
        ta, tb = official.encoder(x), converted.encoder(x)
    assert all(torch.equal(ta[b], tb[b]) for b in ("style", "content"))
