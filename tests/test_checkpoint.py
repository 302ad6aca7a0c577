"""Loading real file formats (official zip-pickle, legacy pickle, adapter safetensors) and every
kind of bad input: each must give a CheckpointError naming the file and the problem. (What stays
resident while loading: test_checkpoint_memory.py.)"""
import contextlib
import os

import pytest
import torch
from safetensors.torch import save_file

from deadiff_core.checkpoint import CheckpointError, DiffusionCheckpoint, IPAdapterFile, load_adapter
from deadiff_core.convert import convert
from deadiff_core.file_pages import FilePages
from deadiff_core.layers import layers_of
from deadiff_core.pickle_globals import unsafe_globals
from deadiff_core.synthetic import TINY, official_state_dict, save_official_checkpoint
from support import hostile_pickles

pytestmark = [pytest.mark.no_comfyui, pytest.mark.fast]  # core code only: ./scripts/test.sh runs it on one runtime


def test_official_checkpoint_loads_both_branches_and_vision(tiny_ckpt):
    adapter = load_adapter(tiny_ckpt)
    assert adapter.info.branches == ("style", "content")
    assert adapter.info.source_format == "official checkpoint"
    assert adapter.vision_state_dict["transformer.resblocks.1.attn.in_proj_weight"].shape == (3 * TINY.vision_width, TINY.vision_width)
    assert not any(k.startswith(("Qformer", "vision_proj", "visual_encoder")) for k in adapter.vision_state_dict)
    assert len(adapter.projections.layers) == 16
    with torch.no_grad():
        tokens = adapter.encoder(torch.randn(3, TINY.vision_tokens, TINY.vision_width))
    assert {k: tuple(v.shape) for k, v in tokens.items()} == {b: (3, TINY.queries, TINY.hidden) for b in ("style", "content")}
    assert all(torch.isfinite(v).all() for v in tokens.values())


def test_loaded_weights_equal_the_file(tiny_ckpt, tiny_state_dict):
    adapter = load_adapter(tiny_ckpt, with_vision=False)
    assert adapter.vision_state_dict is None
    branch = adapter.encoder.branches["content"]
    assert torch.equal(branch.query_tokens, tiny_state_dict["content_blip.query_tokens"])
    assert torch.equal(branch.qformer.encoder.layer[1].crossattention.self.key.weight,
                       tiny_state_dict["content_blip.Qformer.bert.encoder.layer.1.crossattention.self.key.weight"])
    assert torch.equal(branch.proj.dense2.bias, tiny_state_dict["content_proj_layer.dense2.bias"])
    assert torch.equal(adapter.projections[6].i_to_v.weight,
                       tiny_state_dict["model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.i_to_v.weight"])


def test_legacy_pickle_and_bare_state_dict_load(tmp_path, tiny_state_dict):
    path = tmp_path / "legacy.pt"
    torch.save(tiny_state_dict, path, _use_new_zipfile_serialization=False)  # no "state_dict" level, not a zip
    assert load_adapter(path).info.branches == ("style", "content")


def test_style_only_file_loads_and_says_so(tmp_path):
    path = tmp_path / "style_only.ckpt"
    save_official_checkpoint(path, official_state_dict(TINY, branches=("style",)))
    adapter = load_adapter(path)
    assert adapter.info.branches == ("style",)
    assert "no content branch" in adapter.info.describe()
    assert set(adapter.encoder.branches) == {"style"}
    assert sorted(int(i) for i in adapter.projections.layers) == [layer.index for layer in layers_of("style")]


def expect_error(path, *phrases, kind=CheckpointError):
    with pytest.raises(kind) as info:
        load_adapter(path)
    message = str(info.value)
    assert str(path) in message
    for phrase in phrases:
        assert phrase in message, message
    return message


def test_plain_sd15_checkpoint_is_named(tmp_path):
    path = tmp_path / "v1-5-pruned-emaonly.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3),
                               "first_stage_model.decoder.conv_out.weight": torch.zeros(3, 4, 3, 3)}}, path)
    # a fact, no widget advice: DEADiff Loader adds "Load it with Load Checkpoint" (test_server_bad_input.py)
    expect_error(path, "diffusion-model checkpoint", "not DEADiff", "no style_blip", kind=DiffusionCheckpoint)


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_ip_adapter_file_is_named(tmp_path, fmt):
    image_proj, ip = {"proj.weight": torch.zeros(8, 4)}, {"1.to_k_ip.weight": torch.zeros(4, 4)}
    path = tmp_path / f"ip-adapter_sd15.{fmt}"
    if fmt == "bin":
        torch.save({"image_proj": image_proj, "ip_adapter": ip}, path)
    else:
        save_file({**{f"image_proj.{k}": v for k, v in image_proj.items()}, **{f"ip_adapter.{k}": v for k, v in ip.items()}}, path)
    expect_error(path, "IP-Adapter", kind=IPAdapterFile)


def test_truncated_checkpoint(tmp_path, tiny_ckpt):
    data = tiny_ckpt.read_bytes()
    path = tmp_path / "deadiff_v1.ckpt"
    path.write_bytes(data[: len(data) // 2])
    expect_error(path, "truncated", "Download it again")


@pytest.mark.parametrize("name", ["garbage.ckpt", "garbage.safetensors"])
def test_random_bytes(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(os.urandom(4096))
    expect_error(path, "corrupt")


def test_truncated_safetensors(tmp_path, tiny_state_dict):
    full = tmp_path / "full.safetensors"
    save_file({k: v.clone() for k, v in tiny_state_dict.items() if k.startswith("style_")}, full)
    path = tmp_path / "cut.safetensors"
    path.write_bytes(full.read_bytes()[:5000])
    expect_error(path, "safetensors", "corrupt or truncated")


def test_empty_file_directory_and_missing_file(tmp_path):
    (tmp_path / "empty.ckpt").write_bytes(b"")
    expect_error(tmp_path / "empty.ckpt", "empty (0 bytes)")
    (tmp_path / "folder.ckpt").mkdir()
    expect_error(tmp_path / "folder.ckpt", "is a directory")
    expect_error(tmp_path / "nowhere.ckpt", "does not exist")


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    expect_error(path, "holds a list")


def test_missing_branch_part(tmp_path, tiny_state_dict):
    sd = {k: v for k, v in tiny_state_dict.items() if not k.startswith("content_proj_layer.")}
    path = tmp_path / "no_content_proj.ckpt"
    save_official_checkpoint(path, sd)
    expect_error(path, "content_proj_layer.", "missing")


def test_missing_image_projection(tmp_path, tiny_state_dict):
    key = "model.diffusion_model.output_blocks.5.1.transformer_blocks.0.attn2.i_to_k.weight"
    path = tmp_path / "no_i_to.ckpt"
    save_official_checkpoint(path, {k: v for k, v in tiny_state_dict.items() if k != key})
    expect_error(path, key, "layer 9")


def test_wrong_shape(tmp_path, tiny_state_dict):
    key = "style_blip.Qformer.bert.encoder.layer.1.crossattention.self.value.weight"
    path = tmp_path / "wrong_shape.ckpt"
    save_official_checkpoint(path, {**tiny_state_dict, key: torch.zeros(TINY.hidden, TINY.vision_width + 1)})
    expect_error(path, key, "shape")


def adapter_file(path, tiny_ckpt, edit=dict):
    """An adapter convert.py wrote, saved again with metadata `edit(what convert.py wrote)` (None: none)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    convert(tiny_ckpt, path, dtype="fp32", progress=False)
    with safe_open(str(path), framework="pt") as f:
        written = f.metadata()
    save_file(load_file(str(path)), str(path), metadata=edit(written))
    return path


def test_adapter_of_a_newer_format_version_is_refused(tmp_path, tiny_ckpt):
    path = adapter_file(tmp_path / "future.safetensors", tiny_ckpt, lambda m: {**m, "version": "2"})
    expect_error(path, "format version 2", "newer ComfyUI-DEADiff", "reads version 1", "Update the pack")


@pytest.mark.parametrize("version", ["0", "1.5", "one"])
def test_adapter_of_a_version_nothing_writes_is_refused(tmp_path, tiny_ckpt, version):
    path = adapter_file(tmp_path / "edited.safetensors", tiny_ckpt, lambda m: {**m, "version": version})
    expect_error(path, f"format version is {version!r}", "no ComfyUI-DEADiff writes", "Convert it again")


def test_the_version_this_pack_writes_loads(tmp_path, tiny_ckpt):
    path = adapter_file(tmp_path / "adapter.safetensors", tiny_ckpt)
    assert load_adapter(path).info.source_format == "adapter safetensors"


def test_official_weights_in_a_safetensors_file_another_tool_wrote_load(tmp_path, tiny_ckpt):
    """No adapter metadata (or another tool's, like {"format": "pt"}): the keys decide, as for a pickle."""
    for name, metadata in (("bare", None), ("pt", {"format": "pt"})):
        path = adapter_file(tmp_path / f"{name}.safetensors", tiny_ckpt, lambda _: metadata)
        adapter = load_adapter(path)
        assert adapter.info.source_format == "official weights (safetensors)" and len(adapter.projections.layers) == 16


def test_a_tokens_file_is_refused_as_model_weights(tmp_path):
    from deadiff_core.token_io import save_tokens
    from deadiff_core.tokens import ReferenceTokens

    path = tmp_path / "tokens_00001_.safetensors"
    save_tokens(path, ReferenceTokens(style=torch.zeros(1, 16, 8), content=torch.zeros(1, 16, 8)))
    expect_error(path, "is a DEADiff tokens file", "not model weights")


def test_different_vision_copies_are_refused(tmp_path, tiny_state_dict):
    key = "content_blip.visual_encoder.ln_pre.weight"
    path = tmp_path / "two_vits.ckpt"
    save_official_checkpoint(path, {**tiny_state_dict, key: tiny_state_dict[key] + 1})
    expect_error(path, "vision towers differ")
    assert load_adapter(path, with_vision=False).vision_state_dict is None


HOSTILE = {  # form -> (file name, builder); each builder returns the global its file's pickle calls
    "os.system by torch.save (zip)": ("evil.ckpt", hostile_pickles.os_system_zip),
    "os.system by name (hand-written pickle)": ("evil.pt", hostile_pickles.os_system_by_name),
    "builtins.eval (zip)": ("evil.ckpt", hostile_pickles.eval_zip),
    "builtins.eval (legacy torch.save .pt)": ("evil.pt", hostile_pickles.eval_legacy),
    "builtins.exec (zip, pickle protocol 4)": ("evil.ckpt", hostile_pickles.exec_protocol_4_zip),
    "builtins.exec (plain pickle, protocol 5)": ("evil.pt", hostile_pickles.exec_plain_pickle),
    "numpy array (zip)": ("with_numpy.ckpt", hostile_pickles.numpy_array_zip),
}


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on protocols 3+, which these files use
@pytest.mark.parametrize("form", HOSTILE)
def test_pickle_that_carries_code_is_named_and_not_run(tmp_path, form):
    name, make = HOSTILE[form]
    marker, path = tmp_path / "pwned", tmp_path / name
    called = make(path, marker)
    message = expect_error(path, "refused: the file's pickle calls", called, "could run code", "NOT loaded")
    assert "Download it again" not in message  # a warning, not a broken download
    assert not marker.exists()
    if make in hostile_pickles.RUNS_CODE:  # the payload is real: an unsafe load would have run it
        with contextlib.suppress(Exception):  # a plain pickle runs and is then refused as not torch's format
            torch.load(path, weights_only=False)
        assert marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on protocols 3+, which these files use
@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("zipped", [True, False])
def test_safe_file_of_any_pickle_protocol_is_not_called_code(tmp_path, tiny_state_dict, zipped, protocol):
    """Its globals are torch's own (tensor rebuilding): a load that fails for another reason is no refusal."""
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": tiny_state_dict}, path, pickle_protocol=protocol, _use_new_zipfile_serialization=zipped)
    assert unsafe_globals(path) == []
    path.write_bytes(path.read_bytes()[:-100])
    message = expect_error(path, "cannot be read")
    assert "refused" not in message


def test_loading_one_branch_of_a_full_file(tiny_ckpt):
    adapter = load_adapter(tiny_ckpt, branches=("content",))
    assert adapter.info.branches == ("content",)
    assert set(adapter.encoder.branches) == {"content"}
    assert sorted(int(i) for i in adapter.projections.layers) == [4, 5, 6, 7, 8]
    assert "no style branch" in adapter.info.describe()


def test_asking_for_a_branch_the_file_lacks(tmp_path):
    path = tmp_path / "style_only.ckpt"
    save_official_checkpoint(path, official_state_dict(TINY, branches=("style",)))
    with pytest.raises(CheckpointError, match="has no content branch"):
        load_adapter(path, branches=("content",))


def test_file_pages_leave_ordinary_memory_alone():
    tensor = torch.randn(2**20)
    before = tensor.clone()
    FilePages().release(tensor)  # dropping anonymous pages would zero them
    assert torch.equal(tensor, before)


def test_file_pages_leave_a_written_mapping_alone(tiny_ckpt):
    key = "style_blip.Qformer.bert.embeddings.word_embeddings.weight"
    tensor = torch.load(tiny_ckpt, mmap=True, weights_only=True)["state_dict"][key]
    tensor.add_(1)  # copy-on-write: dropping these pages would bring back the file's values
    written = tensor.clone()
    FilePages().release(tensor)
    assert torch.equal(tensor, written)
