"""The pack as ComfyUI loads it: cloned into custom_nodes of a real ComfyUI server."""
from deadiff_core.synthetic import save_official_checkpoint
from scripts.comfy_server import PACK_FOLDER_NAME


def test_pack_imports_without_errors(comfy_server):
    """ComfyUI lists each custom node folder with its import time, marked (IMPORT FAILED) if it broke."""
    timing_lines = [line for line in comfy_server.log().splitlines() if line.rstrip().endswith("/" + PACK_FOLDER_NAME)]
    assert len(timing_lines) == 1, comfy_server.log()[-3000:]
    assert "seconds:" in timing_lines[0] and "IMPORT FAILED" not in timing_lines[0]
    pack_lines = [line for line in comfy_server.log().splitlines() if PACK_FOLDER_NAME in line]
    assert not [line for line in pack_lines if "Cannot import" in line or "Traceback" in line]


def test_loader_lists_models_deadiff_files(comfy_server, tiny_state_dict):
    save_official_checkpoint(comfy_server.model_path("deadiff", "deadiff_tiny.ckpt"), tiny_state_dict)
    info = comfy_server.get("/object_info/DEADiffLoader")["DEADiffLoader"]
    assert info["category"] == "DEADiff" and info["output"] == ["DEADIFF"]
    assert "deadiff_tiny.ckpt" in info["input"]["required"]["deadiff_name"][0]
    assert info["input"]["optional"]["dtype"][0] == ["auto", "fp32", "fp16", "bf16"]
    assert info["input"]["optional"]["branches"][0] == ["both", "style only", "content only"]
    assert info["description"]
    for spec in (*info["input"]["required"].values(), *info["input"]["optional"].values()):
        assert spec[1]["tooltip"]
