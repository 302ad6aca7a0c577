"""DynamicVRAM, ComfyUI 0.3x's default on NVIDIA GPUs, switched on in-process on the CPU as main.py does:
comfy_aimdo initialised, comfy.memory_management.aimdo_enabled set and CoreModelPatcher swapped for
ModelPatcherDynamic (which gives a ModelPatcher for a CPU load device; aimdo's init_devices needs a GPU).
Under it comfy.ops layers hold no weight until their state dict arrives: the case that broke our loader."""
import pytest
import torch

from deadiff_core.checkpoint import load_adapter
from deadiff_core.synthetic import VIT_L_TINY, official_state_dict, save_official_checkpoint
from scripts.sd15 import sd15_unet_model

LATENT = (2, 4, 16, 16)  # [cond ; uncond] at 128 px


@pytest.fixture
def dynamic_vram(comfy, monkeypatch):
    """Turns DynamicVRAM on for one test; the fixture's teardown turns it off again."""
    memory_management = pytest.importorskip(
        "comfy.memory_management", reason="no DynamicVRAM in this ComfyUI (no comfy.memory_management: ComfyUI 0.3.75 predates it)")
    import comfy.model_patcher
    import comfy_aimdo.control

    assert comfy_aimdo.control.init()
    monkeypatch.setattr(memory_management, "aimdo_enabled", True)
    monkeypatch.setattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcherDynamic)
    return memory_management


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("dynamic") / "deadiff_vit_l_tiny.ckpt"
    save_official_checkpoint(path, official_state_dict(VIT_L_TINY, seed=31, scale=0.05))
    return path


@pytest.fixture(scope="module")
def unet_state_dict(comfy):
    return sd15_unet_model(comfy, seed=32).model.diffusion_model.state_dict()


def test_the_switch_takes_comfy_ops_layers_have_no_weight_until_loaded(dynamic_vram, comfy):
    layer = comfy.ops.manual_cast.Linear(4, 3)
    assert layer.weight is None
    layer.load_state_dict({"weight": torch.ones(3, 4), "bias": torch.zeros(3)})
    assert torch.equal(layer.weight, torch.ones(3, 4))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["fp16", "fp32"])
def test_loader_materialises_every_weight_in_its_dtype(dynamic_vram, comfy, checkpoint, dtype):
    from deadiff_core.comfy_adapter import ComfyDEADiff

    deadiff = ComfyDEADiff(load_adapter(checkpoint, dtype=dtype, operations=comfy.ops.manual_cast))
    for module in (deadiff.adapter.encoder, deadiff.adapter.projections, deadiff.embedded_clip_vision.model):
        floating = [t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
        assert floating and {t.dtype for t in floating} == {dtype}
        assert not any(t.is_meta for t in (*module.parameters(), *module.buffers()))


def test_adapter_stays_in_comfyuis_model_management(dynamic_vram, comfy, checkpoint):
    import comfy.model_management as mm

    from deadiff_core.comfy_adapter import ComfyDEADiff

    deadiff = ComfyDEADiff(load_adapter(checkpoint, dtype=torch.float16, operations=comfy.ops.manual_cast))
    patchers = (deadiff.encoder_patcher, deadiff.projections_patcher, deadiff.embedded_clip_vision.patcher)
    assert all(isinstance(p, comfy.model_patcher.ModelPatcher) for p in patchers)
    deadiff.encode(torch.rand(1, 64, 64, 3), deadiff.embedded_clip_vision)
    mm.load_models_gpu([deadiff.projections_patcher])
    loaded = {id(m.model) for m in mm.current_loaded_models}
    assert all(id(p) in loaded for p in patchers)  # ComfyUI counts, loads and can offload each of them
    mm.unload_all_models()
    assert not any(id(m.model) in {id(p) for p in patchers} for m in mm.current_loaded_models)


def generate(comfy, checkpoint, unet_state_dict, with_deadiff=True):
    """Load, encode, apply (all as the nodes do) and one UNet call of a UNet loaded as UNETLoader loads it."""
    import comfy.sd

    from deadiff_core.comfy_adapter import ComfyDEADiff
    from deadiff_core.comfy_patch import InjectionSettings, apply_deadiff

    model = comfy.sd.load_diffusion_model_state_dict(dict(unet_state_dict), model_options={"dtype": torch.float32})
    if with_deadiff:
        deadiff = ComfyDEADiff(load_adapter(checkpoint, dtype=torch.float32, operations=comfy.ops.manual_cast))
        image = torch.rand(1, 96, 64, 3, generator=torch.Generator().manual_seed(33))
        tokens = deadiff.encode(image, deadiff.embedded_clip_vision)
        model = apply_deadiff(model, deadiff, tokens, InjectionSettings(mode="style and content"))
    g = torch.Generator().manual_seed(34)
    x, context, sigma = torch.randn(*LATENT, generator=g), torch.randn(2, 77, 768, generator=g), torch.tensor([5.0, 5.0])
    comfy.model_management.load_models_gpu([model])
    options = dict(model.model_options["transformer_options"], cond_or_uncond=[0, 1], sigmas=sigma)
    with torch.no_grad():
        return model.model.apply_model(x, sigma, c_crossattn=context, transformer_options=options)


def test_generation_with_dynamic_vram_equals_without(comfy, checkpoint, unet_state_dict, request):
    expected = generate(comfy, checkpoint, unet_state_dict)
    plain = generate(comfy, checkpoint, unet_state_dict, with_deadiff=False)
    request.getfixturevalue("dynamic_vram")
    dynamic = generate(comfy, checkpoint, unet_state_dict)
    assert torch.equal(dynamic, expected)
    assert (dynamic - plain).abs().mean() > 1e-3  # DEADiff acted in both
