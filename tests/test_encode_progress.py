"""DEADiff Encode shows its progress in the editor: ComfyUI's progress bar, a step per reference of the batch,
sent by the real server as `progress` websocket messages; and encoding a reference at a time gives the tokens
of each reference encoded alone, and those of the batched encode it replaced."""
import asyncio
import json
import uuid

import pytest
import torch
from safetensors.torch import load_file

from deadiff_core.checkpoint import load_adapter
from deadiff_core.synthetic import VIT_L_TINY, official_state_dict, save_official_checkpoint
from scripts import run_workflow
from scripts.graphs import DEADIFF, run_ok
from scripts.images import save_reference

STEMS = ("style_02", "style_03", "style_04")  # three different pictures
SIZE = (320, 256)  # all of one size: Image Batch would scale a second image to the first's


def encode_and_save(names, prefix):
    """Load DEADiff Model, the references (Load Image nodes joined by Image Batch), Encode, Save Tokens."""
    prompt = {"5": {"class_type": "DEADiffLoader", "inputs": {"deadiff_name": DEADIFF}},
              "20": {"class_type": "DEADiffSaveTokens", "inputs": {"tokens": ["7", 0], "filename_prefix": prefix}}}
    image = None
    for i, name in enumerate(names):
        prompt[f"3{i}"] = {"class_type": "LoadImage", "inputs": {"image": name}}
        if image is None:
            image = [f"3{i}", 0]
        else:
            prompt[f"4{i}"] = {"class_type": "ImageBatch", "inputs": {"image1": image, "image2": [f"3{i}", 0]}}
            image = [f"4{i}", 0]
    prompt["7"] = {"class_type": "DEADiffEncode", "inputs": {"deadiff": ["5", 0], "image": image}}
    return prompt


async def _run_listening(url, prompt, timeout=600):
    """Queue `prompt` with a websocket client listening (as the editor does); the messages it got, in order."""
    import aiohttp  # ComfyUI's own server library, in every ComfyUI environment

    client_id = uuid.uuid4().hex
    messages = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{url}/ws?clientId={client_id}") as ws:
            prompt_id, error = await asyncio.to_thread(run_workflow.queue_prompt, url, prompt, client_id)
            assert error is None, error
            while True:
                message = await asyncio.wait_for(ws.receive(), timeout)
                assert message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), message
                if message.type == aiohttp.WSMsgType.BINARY:
                    continue  # previews
                event = json.loads(message.data)
                data = event.get("data") or {}
                if data.get("prompt_id") not in (None, prompt_id):
                    continue
                messages.append(event)
                if event["type"] == "execution_error" or (event["type"] == "executing" and data.get("node") is None
                                                          and data.get("prompt_id") == prompt_id):
                    return prompt_id, messages  # the prompt is done


def test_encode_reports_progress_per_reference_and_a_batch_encodes_as_its_references_alone(server):
    names = [f"progress_{stem}.png" for stem in STEMS]
    for name, stem in zip(names, STEMS):
        save_reference(server.input_path(name), stem, SIZE)
    server.free()  # the encode runs again, not from ComfyUI's cache
    prompt_id, messages = asyncio.run(_run_listening(server.url, encode_and_save(names, "progress/batch")))
    assert not [m for m in messages if m["type"] == "execution_error"], messages
    progress = [m["data"] for m in messages if m["type"] == "progress" and m["data"]["node"] == "7"]
    # ComfyUI 0.33 drops an update less than 100 ms after the last one; a ViT-L/14 pass takes far longer
    assert [(p["value"], p["max"]) for p in progress] == [(1, 3), (2, 3), (3, 3)], messages
    assert all(p["prompt_id"] == prompt_id for p in progress)
    events = [m["type"] for m in messages if m["type"] in ("executing", "progress") and
              (m["data"].get("node") == "7")]
    assert events == ["executing", "progress", "progress", "progress"]  # while the encode node runs

    entry = run_workflow.wait_for(server.url, prompt_id, 60)
    batch = saved_tokens(server, entry)
    assert batch["style"].shape[0] == batch["content"].shape[0] == 3
    for i, name in enumerate(names):  # each reference encoded alone
        alone = saved_tokens(server, run_ok(server, encode_and_save([name], f"progress/single_{i}")))
        for branch in ("style", "content"):
            assert torch.equal(alone[branch][0], batch[branch][i]), (i, branch)


def saved_tokens(server, entry):
    (item,) = entry["outputs"]["20"]["deadiff_tokens"]
    return load_file(server.output_path(item))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("progress") / "deadiff_vit_l_tiny.ckpt"
    save_official_checkpoint(path, official_state_dict(VIT_L_TINY, seed=41, scale=0.05))
    return path


def test_a_reference_at_a_time_gives_the_batched_encode_s_tokens(comfy, checkpoint):
    """The encode this replaced ran the whole batch through the vision model and the Q-Formers at once."""
    from deadiff_core.comfy_adapter import ComfyDEADiff
    from deadiff_core.comfy_vision import vision_hidden_states

    deadiff = ComfyDEADiff(load_adapter(checkpoint, dtype=torch.float32, operations=comfy.ops.manual_cast))
    vision = deadiff.embedded_clip_vision
    image = torch.rand(4, 96, 80, 3, generator=torch.Generator().manual_seed(42))
    steps = []
    tokens = deadiff.encode(image, vision, progress=lambda done, total: steps.append((done, total)))
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    with torch.no_grad():  # the batched encode, as comfy_adapter.encode did it before
        batched = deadiff.adapter.encoder(vision_hidden_states(vision, image).float())
    for branch in ("style", "content"):
        assert tokens[branch].shape == batched[branch].shape == (4, 16, 768)
        # Not bit-equal on CPU: a matmul over 4 references' rows may be blocked (and so summed) in another order
        # than over one's, which moves the last bits (measured: 2e-6 on tokens up to 4.2 in size, a few float32
        # ULPs). Allowed: 32 ULPs of the largest token value. Encoding a reference alone is bit-equal to its row
        # of a batch now (the server test above), which is what the per-reference loop buys.
        ulp = torch.finfo(torch.float32).eps * batched[branch].abs().max().item()
        torch.testing.assert_close(tokens[branch], batched[branch], rtol=0, atol=32 * ulp)
        assert not torch.equal(tokens[branch][0], tokens[branch][1])  # the references differ
