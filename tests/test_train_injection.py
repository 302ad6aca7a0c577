"""Training's per-row injection through the shared attn2 patches, in ComfyUI's UNet (a tiny SD1.5:
same 16 layers, narrow channels), against a written-out per-row joint softmax
(docs/DESIGN.md, Injection and Training)."""
import pytest
import torch

from deadiff_core.synthetic import OfficialLayout, official_state_dict
from support.attention_oracle import spec_image_projections, written_out_attention
from support.layout_spec import SPEC_LAYERS

# the real token width (768) and the tiny UNet's layer widths (32/64/128)
LAYOUT = OfficialLayout(vision_width=32, vision_blocks=1, image_size=28, qformer_layers=1, intermediate=64, vocab=4200,
                        positions=16, proj_hidden=64, unet_channels=32)


pytestmark = [pytest.mark.fast, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def unet(comfy):
    from deadiff_core.train.tiny import tiny_unet
    patcher = tiny_unet(seed=3)[0]
    patcher.model.requires_grad_(False)
    return patcher


@pytest.fixture(scope="module")
def official():
    return official_state_dict(LAYOUT, seed=4, scale=0.05, with_vision=False, with_other_parts=False)


def batch(rows=3, seed=5):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, 4, 8, 8, generator=g), torch.tensor([10.0, 400.0, 900.0][:rows]),
            torch.randn(rows, 77, 768, generator=g),
            {b: torch.randn(rows, 16, 768, generator=g) for b in ("style", "content")})


def written_out(unet, official, x, t, context, tokens, keep):
    """Each attn2 replaced by the attention of docs/DESIGN.md, Injection, per row:
    K = [to_k(text); keep_b * img_b W_k^T], V likewise, one softmax in float64; a row whose branch is not kept gets 16 zero keys/values."""
    def image_tokens(index, branch):
        image = tokens[branch] * keep[branch].float()[:, None, None]
        return image, image

    diffusion_model = unet.model.diffusion_model
    with written_out_attention(diffusion_model, official, image_tokens), torch.no_grad():
        return diffusion_model(x, t, context=context)


def training_run(unet, projections, x, t, context, tokens, keep):
    from deadiff_core.train.injection import PerSampleInjection, patched_transformer_options

    injection = PerSampleInjection(projections)
    options = patched_transformer_options(unet, injection)
    injection.set_batch(tokens, keep)
    return unet.model.diffusion_model(x, t, context=context, transformer_options=dict(options))


def relative_error(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def test_per_row_tokens_and_zeroing_equal_the_written_out_attention(comfy, unet, official, deadiff):
    x, t, context, tokens = batch()
    keep = {"style": torch.tensor([True, False, True]), "content": torch.tensor([False, True, True])}
    with torch.no_grad():
        got = training_run(unet, deadiff.adapter.projections, x, t, context, tokens, keep)
    expected = written_out(unet, official, x, t, context, tokens, keep)
    assert relative_error(got, expected) <= 1e-4
    nothing = {b: torch.zeros(3, dtype=torch.bool) for b in keep}
    assert relative_error(written_out(unet, official, x, t, context, tokens, nothing), expected) > 1e-3
    # a row's output depends on its own tokens only
    moved = {b: tokens[b].clone() for b in tokens}
    moved["style"][0] += 1.0
    with torch.no_grad():
        again = training_run(unet, deadiff.adapter.projections, x, t, context, moved, keep)
    assert not torch.equal(again[0], got[0]) and torch.equal(again[1:], got[1:])


def test_equals_the_inference_injection_when_every_row_has_the_same_reference(comfy, unet, deadiff):
    from deadiff_core.comfy_patch import InjectionSettings, apply_deadiff
    from deadiff_core.tokens import ReferenceTokens

    x, t, context, tokens = batch(rows=2)
    same = {b: tokens[b][:1].expand(2, -1, -1) for b in tokens}
    patched = apply_deadiff(unet, deadiff, ReferenceTokens(**{b: tokens[b][:1] for b in tokens}),
                            InjectionSettings(mode="style and content"))
    options = dict(patched.model_options["transformer_options"], cond_or_uncond=[0])
    with torch.no_grad():
        inference = unet.model.diffusion_model(x, t, context=context, transformer_options=options)
        training = training_run(unet, deadiff.adapter.projections, x, t, context, same,
                                {b: torch.ones(2, dtype=torch.bool) for b in same})
    assert relative_error(training, inference) <= 1e-5


def test_gradients_reach_the_projections_and_only_the_tokens_of_rows_that_see_them(comfy, unet, official):
    from deadiff_core.layers import SD15_LAYERS
    from deadiff_core.projections import ImageProjections

    projections = ImageProjections({layer.index: LAYOUT.layer_channels(layer) for layer in SD15_LAYERS}, 768)
    with torch.no_grad():
        for i, (_, block, _, _) in enumerate(SPEC_LAYERS):
            w_k, w_v = spec_image_projections(official, block)
            projections[i].i_to_k.weight.copy_(w_k)
            projections[i].i_to_v.weight.copy_(w_v)
    x, t, context, tokens = batch()
    tokens = {b: v.requires_grad_(True) for b, v in tokens.items()}
    keep = {"style": torch.tensor([True, False, True]), "content": torch.tensor([False, False, True])}
    training_run(unet, projections, x, t, context, tokens, keep).square().mean().backward()
    assert all(projections[i].i_to_k.weight.grad.abs().sum() > 0 and projections[i].i_to_v.weight.grad.abs().sum() > 0
               for i in range(16))
    assert [bool(g.abs().sum() > 0) for g in tokens["style"].grad] == [True, False, True]
    assert [bool(g.abs().sum() > 0) for g in tokens["content"].grad] == [False, False, True]


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(comfy, deadiff):
    from deadiff_core.train.grad_checkpoint import enable_gradient_checkpointing
    from deadiff_core.train.tiny import tiny_unet

    x, t, context, tokens = batch()
    keep = {"style": torch.tensor([True, True, False]), "content": torch.tensor([True, False, True])}
    results = []
    for checkpointing in (False, True):
        unet = tiny_unet(seed=3)[0]
        unet.model.requires_grad_(False)
        if checkpointing:
            assert enable_gradient_checkpointing(unet.model.diffusion_model) == 22 + 16  # ResBlocks + SpatialTransformers
        leaves = {b: v.clone().requires_grad_(True) for b, v in tokens.items()}
        loss = training_run(unet, deadiff.adapter.projections, x, t, context, leaves, keep).square().mean()
        loss.backward()
        results.append((loss.detach(), {b: v.grad for b, v in leaves.items()}))
    (loss, grads), (loss_ckpt, grads_ckpt) = results
    assert torch.equal(loss, loss_ckpt)
    assert all(torch.allclose(grads[b], grads_ckpt[b], rtol=1e-5, atol=1e-9) for b in grads)


def test_both_providers_implement_the_injection_interface(comfy):
    """The attn2 patch reads inference's and training's image keys/values through one interface."""
    import inspect

    from deadiff_core.comfy_patch import Injection
    from deadiff_core.injection_provider import InjectionProvider
    from deadiff_core.train.injection import PerSampleInjection

    interface = {name: inspect.signature(member) for name, member in vars(InjectionProvider).items()
                 if inspect.isfunction(member) and not name.startswith("_")}
    assert set(interface) == {"image_keys_values", "region", "models"}
    for provider in (Injection, PerSampleInjection):
        assert InjectionProvider in provider.__mro__
        for name, signature in interface.items():
            own = vars(provider).get(name)  # its own method, not the Protocol's empty body
            assert own is not None, f"{provider.__name__} lacks {name}"
            assert list(inspect.signature(own).parameters) == list(signature.parameters), (provider.__name__, name)
