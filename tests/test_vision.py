"""The one vision path: the checkpoint's embedded ViT, made into ComfyUI's CLIP-vision model, must
match transformers' CLIPVisionModel and a standard clip_vision file holding the same weights."""
import os

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from deadiff_core.checkpoint import adapter_from_state_dict
from deadiff_core.synthetic import OfficialLayout, _Random, official_state_dict, vision_encoder
from scripts.images import reference_image as synthetic_reference
from support.qformer_oracle import reference_tokens

MEAN, STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


def hf_vision_model(openai_vit, rnd):
    """transformers' CLIP ViT-L/14 in fp32 holding the checkpoint's ViT."""
    config = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=224, patch_size=14, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=768)
    hf = CLIPVisionModelWithProjection(config).eval()
    hf.load_state_dict(hf_layout(openai_vit, rnd), strict=True)
    return hf


def hf_layout(openai_vit, rnd):
    """OpenAI-layout 23-block ViT -> transformers CLIPVisionModelWithProjection keys, with a random
    24th block, post_layernorm and projection (a standard clip_vision file's extra parts)."""
    sd = {"vision_model.embeddings.class_embedding": openai_vit["class_embedding"],
          "vision_model.embeddings.patch_embedding.weight": openai_vit["conv1.weight"],
          "vision_model.embeddings.position_embedding.weight": openai_vit["positional_embedding"],
          "vision_model.pre_layrnorm.weight": openai_vit["ln_pre.weight"], "vision_model.pre_layrnorm.bias": openai_vit["ln_pre.bias"]}
    names = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    extra = {f"transformer.resblocks.23.{k.split('.', 3)[3]}": rnd(*v.shape) for k, v in openai_vit.items() if k.startswith("transformer.resblocks.0.")}
    for key, value in {**openai_vit, **extra}.items():
        if not key.startswith("transformer.resblocks."):
            continue
        block, rest = key.split(".")[2], key.split(".", 3)[3]
        out = f"vision_model.encoder.layers.{block}."
        if rest.startswith("attn.in_proj_"):
            for part, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3)):
                sd[out + f"self_attn.{part}.{rest.rsplit('_', 1)[1]}"] = chunk
        else:
            module, param = rest.rsplit(".", 1)
            sd[out + f"{names[module]}.{param}"] = value
    sd["vision_model.post_layernorm.weight"], sd["vision_model.post_layernorm.bias"] = rnd.norm(1024)
    sd["visual_projection.weight"] = rnd(768, 1024)
    return {k: v.float() for k, v in sd.items()}


@pytest.fixture(scope="module")
def vit():
    """Full-size random ViT-L in the checkpoint's layout, fp16-exact so ComfyUI's fp16 storage is lossless."""
    rnd = _Random(7, 0.02, "cpu")
    return {k: v.half().to(v.dtype) for k, v in vision_encoder(OfficialLayout(), rnd).items()}, rnd


def reference_image(name="style_01"):
    """A synthetic reference (scripts/images.py) as ComfyUI's IMAGE: (1, height, width, 3) floats in [0, 1]."""
    image = np.asarray(synthetic_reference(name), dtype=np.float32) / 255
    return torch.from_numpy(image).unsqueeze(0)


def test_embedded_vit_equals_transformers_clip(comfy, vit, caplog):
    from deadiff_core.comfy_vision import EmbeddedClipVision, vision_hidden_states

    openai_vit, rnd = vit
    image = reference_image()  # 2:3 portrait: squashed, never cropped
    assert image.shape[1] != image.shape[2]
    ours = vision_hidden_states(EmbeddedClipVision(openai_vit), image)
    assert "missing clip vision" not in caplog.text  # the completed ViT leaves nothing uninitialised

    pixels = comfy.clip_vision.clip_preprocess(image, crop=False)
    with torch.no_grad():
        expected = hf_vision_model(openai_vit, rnd)(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
    assert ours.shape == (1, 257, 1024)
    assert (ours - expected).abs().max().item() <= 1e-5 * expected.abs().max().item()


def test_same_tokens_as_a_standard_clip_vision_file(comfy, vit, tmp_path):
    from deadiff_core.comfy_vision import EmbeddedClipVision, vision_hidden_states

    openai_vit, rnd = vit
    path = tmp_path / "clip_vision_vit_l.safetensors"
    save_file(hf_layout(openai_vit, rnd), str(path))
    standard = comfy.clip_vision.load(str(path))  # what ComfyUI's CLIPVisionLoader does
    sd = official_state_dict(OfficialLayout(), seed=8, with_vision=False, with_other_parts=False)
    adapter = adapter_from_state_dict(sd, "<memory>", "official checkpoint")
    image = torch.cat([reference_image("style_02"), reference_image("style_02").flip(2)])
    with torch.no_grad():
        a = adapter.encoder(vision_hidden_states(EmbeddedClipVision(openai_vit), image))
        b = adapter.encoder(vision_hidden_states(standard, image))
    for branch in ("style", "content"):
        assert a[branch].shape == (2, 16, 768)
        assert torch.equal(a[branch], b[branch])


@pytest.mark.fast
def test_preprocessing_matches_the_official_pil_pipeline(comfy):
    """Official DEADiff: convert("RGB"), squash-resize to 224 bicubic, [0,1], CLIP mean/std."""
    pil = synthetic_reference("content_01")  # smooth 3:2 landscape, so a centre crop would show
    assert pil.width != pil.height
    official = np.asarray(pil.resize((224, 224), Image.BICUBIC), dtype=np.float32) / 255
    official = (torch.from_numpy(official) - torch.tensor(MEAN)) / torch.tensor(STD)
    ours = comfy.clip_vision.clip_preprocess(reference_image("content_01"), crop=False)[0].movedim(0, -1)
    assert ours.shape == official.shape
    assert (ours - official).abs().mean() < 0.02  # resampling kernels differ slightly
    cropped = comfy.clip_vision.clip_preprocess(reference_image("content_01"), crop=True)[0].movedim(0, -1)
    assert (cropped - official).abs().mean() > 0.1  # a crop would not pass the comparison above


def test_a_vision_model_that_is_not_vit_l_224_is_refused(comfy):
    from deadiff_core.comfy_vision import vision_hidden_states

    json_config = os.path.join(os.path.dirname(comfy.clip_vision.__file__), "clip_vision_config_vitl_336.json")
    vit_336 = comfy.clip_vision.ClipVisionModel(json_config)
    with pytest.raises(ValueError, match="ViT-L/14 224px"):
        vision_hidden_states(vit_336, torch.rand(1, 64, 64, 3))



def test_the_embedded_vit_is_held_once_in_comfyuis_model_management(comfy):
    import gc
    import weakref

    from deadiff_core.comfy_adapter import ComfyDEADiff
    from deadiff_core.synthetic import VIT_L_TINY

    adapter = adapter_from_state_dict(official_state_dict(VIT_L_TINY, seed=3, with_other_parts=False), "<memory>",
                                      "official checkpoint")
    loaded = weakref.ref(adapter.vision_state_dict["conv1.weight"])
    deadiff = ComfyDEADiff(adapter)
    del adapter
    gc.collect()
    assert loaded() is None  # the state dict went once the CLIP vision model was built from it
    vision = deadiff.embedded_clip_vision
    assert vision.patcher.model_size() > 0 and deadiff.info.has_vision
    hidden = vision.encode_image(torch.rand(1, 64, 64, 3), crop=False)["penultimate_hidden_states"]
    assert hidden.shape == (1, 257, 1024) and torch.isfinite(hidden).all()


def test_fp32_tokens_equal_an_fp32_computation_of_the_official_mixed_precision_file(comfy):
    """dtype fp32 holds for the whole encoder, the embedded ViT included: the official file's fp32 tensors (the
    ViT's in_proj, norms and embeddings; the Q-Formers) are not rounded to ComfyUI's CLIP-vision dtype on the way."""
    from deadiff_core.comfy_adapter import ComfyDEADiff

    layout = OfficialLayout()
    sd = official_state_dict(layout, seed=9, with_other_parts=False)
    openai_vit = {k.removeprefix("style_blip.visual_encoder."): v for k, v in sd.items()
                  if k.startswith("style_blip.visual_encoder.")}
    assert {v.dtype for v in openai_vit.values()} == {torch.float16, torch.float32}  # the file's mix
    deadiff = ComfyDEADiff(adapter_from_state_dict(sd, "<memory>", "official checkpoint", dtype=torch.float32,
                                                   operations=comfy.ops.manual_cast))
    image = torch.rand(2, 240, 200, 3, generator=torch.Generator().manual_seed(10))
    tokens = deadiff.encode(image, deadiff.embedded_clip_vision)

    fp32 = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    pixels = comfy.clip_vision.clip_preprocess(image, crop=False)
    with torch.no_grad():
        hf = hf_vision_model({k: v.float() for k, v in openai_vit.items()}, _Random(0, 0.02, "cpu"))
        hidden = hf(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
    for branch in ("style", "content"):
        expected = reference_tokens(fp32, branch, layout, hidden)
        assert (tokens[branch] - expected).abs().max().item() <= 1e-4, branch
