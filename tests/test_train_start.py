"""Where training starts and what it hands over: BLIP-Diffusion's published layouts in both
branches, a DEADiff checkpoint to fine-tune, and the exported adapter, which the inference path
(load_adapter -> apply_deadiff) and a next training both read back."""
import os

import pytest
import torch

from deadiff_core.layers import SD15_LAYERS
from deadiff_core.synthetic import VIT_L_TINY
from support.training import make_config, trainer, write_pairs

# BLIP-Diffusion's layout at a small size: the real token width (768, the UNet's text context) and vision width
# (1024, ViT-L/14's), one ViT block and a one-layer Q-Former
BLIP_LAYOUT = VIT_L_TINY


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_pairs(str(tmp_path_factory.mktemp("pairs")))


@pytest.mark.parametrize("folder", [True, False], ids=["checkpoint folder", "whole-model file"])
def test_blip_diffusion_weights_start_both_branches_and_i_to_kv_copy_to_kv(comfy, manifest, tmp_path, folder):
    from deadiff_core.train.blip_diffusion import write_synthetic_blip_diffusion

    path = tmp_path / ("blip_diffusion" if folder else "blip_diffusion.pth")
    blip, proj = write_synthetic_blip_diffusion(str(path), BLIP_LAYOUT, seed=9, folder=folder)
    t = trainer(make_config(manifest, tmp_path / "run", start={"source": "blip_diffusion", "path": str(path)}))
    for branch, encoder in t.objective.encoder.branches.items():
        assert torch.equal(encoder.query_tokens, blip["query_tokens"])
        assert torch.equal(encoder.ln_vision.weight, blip["ln_vision.weight"])
        for key in ("embeddings.word_embeddings.weight", "encoder.layer.0.crossattention.self.key.weight",
                    "encoder.layer.0.output_query.dense.weight"):
            assert torch.equal(encoder.qformer.state_dict()[key], blip[f"Qformer.bert.{key}"]), (branch, key)
        assert all(torch.equal(encoder.proj.state_dict()[k], v) for k, v in proj.items())
    unet = t.backbone.model.model.diffusion_model
    for layer in SD15_LAYERS:
        attn2 = unet.get_submodule(layer.attn2_path)
        assert torch.equal(t.objective.projections[layer.index].i_to_k.weight, attn2.to_k.weight)
        assert torch.equal(t.objective.projections[layer.index].i_to_v.weight, attn2.to_v.weight)
    assert t.start.vision_state_dict is not None and not t.vision_is_the_starts  # the backbone brings its own ViT
    t.run()


def test_a_file_without_blip_diffusion_weights_is_refused_by_name(comfy, manifest, tmp_path):
    from deadiff_core.checkpoint import CheckpointError

    other = tmp_path / "other.pth"
    torch.save({"model": {"unet.conv_in.weight": torch.zeros(1)}}, other)
    with pytest.raises(CheckpointError, match="no BLIP-Diffusion Q-Former") as info:
        trainer(make_config(manifest, tmp_path / "run", start={"source": "blip_diffusion", "path": str(other)}))
    assert str(other) in str(info.value)
    with pytest.raises(CheckpointError, match="without blip_model"):
        trainer(make_config(manifest, tmp_path / "run", start={"source": "blip_diffusion", "path": str(tmp_path)}))


def test_exported_adapter_loads_applies_and_starts_a_fine_tune(comfy, manifest, tmp_path):
    from deadiff_core.checkpoint import load_adapter
    from deadiff_core.comfy_adapter import ComfyDEADiff
    from deadiff_core.comfy_patch import InjectionSettings, apply_deadiff
    from deadiff_core.tokens import ReferenceTokens
    from deadiff_core.train.tiny import tiny_backbone

    backbone = tiny_backbone(seed=7)
    t = trainer(make_config(manifest, tmp_path / "run", optim={"max_steps": 2}), backbone)
    path = t.run()
    encoder_state, projection_state = t.trained_state()

    adapter = load_adapter(path)
    assert adapter.info.source_format == "adapter safetensors" and adapter.info.branches == ("style", "content")
    assert all(torch.equal(adapter.projections.state_dict()[k], v) for k, v in projection_state.items())
    assert all(torch.equal(adapter.encoder.state_dict()[k], v) for k, v in encoder_state.items())

    deadiff = ComfyDEADiff(adapter)
    hidden = backbone.clip_vision.encode_image(torch.rand(1, 40, 48, 3), crop=False)["penultimate_hidden_states"]
    with torch.no_grad():
        tokens = ReferenceTokens(**adapter.encoder(hidden))
    unet = backbone.model
    patched = apply_deadiff(unet, deadiff, tokens, InjectionSettings(mode="style and content"))
    g = torch.Generator().manual_seed(0)
    x, context = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 77, 768, generator=g)
    sigma = torch.tensor([3.0, 3.0])

    def run(model):
        options = dict(model.model_options["transformer_options"], cond_or_uncond=[0, 1], sigmas=sigma)
        with torch.no_grad():
            return model.model.apply_model(x, sigma, c_crossattn=context, transformer_options=options)
    with_reference, plain = run(patched), run(unet)
    assert torch.isfinite(with_reference).all() and not torch.equal(with_reference[0], plain[0])

    fine_tune = trainer(make_config(manifest, tmp_path / "fine_tune", start={"source": "deadiff", "path": path}))
    again_encoder, again_projections = fine_tune.trained_state()
    assert all(torch.equal(again_encoder[k], v) for k, v in encoder_state.items())
    assert all(torch.equal(again_projections[k], v) for k, v in projection_state.items())


def test_an_adapter_trained_on_a_full_size_sd15_generates_through_the_real_nodes(server, tmp_path):
    """Fine-tune the server's DEADiff file (full ViT-L inside) on its SD1.5 checkpoint, as a user would
    point the trainer at their files; the adapter goes into models/deadiff and generates through
    Load DEADiff Model -> Encode -> Apply -> KSampler."""
    import numpy as np

    from deadiff_core.train.trainer import train
    from scripts.graphs import CHECKPOINT, DEADIFF, graph, run_ok, saved_image

    manifest = write_pairs(str(tmp_path / "pairs"), count=3)
    config = make_config(manifest, tmp_path / "run", model={"factory": "", "checkpoint": server.model_path("checkpoints", CHECKPOINT)},
                         start={"source": "deadiff", "path": server.model_path("deadiff", DEADIFF)},
                         data={"manifest": manifest, "resolution": 64, "workers": 0, "ratios": {"style": 0, "content": 0}},
                         optim={"lr": 1e-2, "warmup_steps": 1, "batch_size": 1, "max_steps": 1},
                         checkpoint={"every": 0, "export_dtype": "fp16", "resume": "none"})
    adapter = train(config)
    trained = "deadiff_trained.safetensors"
    os.replace(adapter, server.model_path("deadiff", trained))

    prompt = graph()
    prompt["5"]["inputs"]["deadiff_name"] = trained
    _, image = saved_image(server, run_ok(server, prompt))
    _, original = saved_image(server, run_ok(server, graph()))
    assert image.shape == original.shape and np.abs(image - original).mean() > 0.5
