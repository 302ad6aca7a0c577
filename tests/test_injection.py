"""DEADiff injection in ComfyUI's real SD1.5 UNet (full architecture, random weights) against a
written-out implementation of docs/DESIGN.md, Injection, that replaces each attn2 forward directly."""
import pytest
import torch

from deadiff_core.checkpoint import adapter_from_state_dict
from deadiff_core.sd15 import SD15_UNET
from deadiff_core.synthetic import OfficialLayout, official_state_dict
from deadiff_core.tokens import ReferenceTokens
from scripts.sd15 import sd15_unet_model
from support.attention_oracle import written_out_attention
from support.layout_spec import SPEC_LAYERS

# a small Q-Former, but the real token width (768) and real layer widths, so it fits SD1.5
LAYOUT = OfficialLayout(vision_width=32, vision_blocks=1, image_size=28, qformer_layers=1, intermediate=64, vocab=4200,
                        positions=16, proj_hidden=64)
ACTIVE = {"style": {"style"}, "content": {"content"}, "style and content": {"style", "content"}}
LATENT = (2, 4, 16, 16)  # [cond ; uncond] at 128 px


@pytest.fixture(scope="module")
def unet(comfy):
    return sd15_unet_model(comfy, seed=11)


@pytest.fixture(scope="module")
def official():
    return official_state_dict(LAYOUT, seed=12, scale=0.05, with_vision=False, with_other_parts=False)


@pytest.fixture(scope="module")
def tokens():
    g = torch.Generator().manual_seed(13)
    return ReferenceTokens(style=torch.randn(1, 16, 768, generator=g), content=torch.randn(1, 16, 768, generator=g))


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(14)
    return torch.randn(*LATENT, generator=g), torch.tensor([5.0, 5.0]), torch.randn(2, 77, 768, generator=g)


def run(model, inputs, cond_or_uncond=(0, 1)):
    x, sigma, context = inputs
    options = dict(model.model_options["transformer_options"], cond_or_uncond=list(cond_or_uncond), sigmas=sigma)
    with torch.no_grad():
        return model.model.apply_model(x, sigma, c_crossattn=context, transformer_options=options)


def apply(comfy_model, deadiff, tokens, content_tokens=None, negative_tokens=None, **settings):
    from deadiff_core.comfy_patch import InjectionSettings, apply_deadiff
    return apply_deadiff(comfy_model, deadiff, tokens, InjectionSettings(**settings), content_tokens, negative_tokens)


def rows_of(tokens):
    """A reference_run entry as per-row image tokens [B, T, 768]: None -> 16 zero tokens in both rows, a [T, 768]
    set -> [that set ; as many zero tokens] (rows [cond ; uncond]), a [B, T, 768] tensor -> itself."""
    if tokens is None:
        return torch.zeros(2, 16, 768)
    return tokens if tokens.ndim == 3 else torch.stack([tokens, torch.zeros_like(tokens)])


def reference_run(unet, official, inputs, tokens_by_branch, weights, layer_weights=(1.0,) * 16, value_weights=None,
                  cond_or_uncond=(0, 1)):
    """Spec §2 written out: K = [to_k(text); w_k i_to_k(img)], V = [to_v(text); w_v i_to_v(img)], one softmax,
    zero rows for "no image"; w_k = w_v = weights[branch] x layer weight unless value_weights are given.

    tokens_by_branch[branch]: see rows_of (the [T, 768] set of the conditional row, or each row's own).
    """
    def image_tokens(index, branch):
        img = rows_of(tokens_by_branch[branch])
        key_weight = weights[branch] * layer_weights[index]
        value_weight = (value_weights or weights)[branch] * layer_weights[index]
        return key_weight * img, value_weight * img

    with written_out_attention(unet.model.diffusion_model, official, image_tokens):
        return run(unet, inputs, cond_or_uncond)


def relative_error(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("mode", ["style", "content", "style and content"])
def test_patched_unet_equals_written_out_deadiff(comfy, unet, official, deadiff, tokens, inputs, mode):
    patched = apply(unet, deadiff, tokens, mode=mode, style_weight=0.8, content_weight=1.3)
    expected = reference_run(unet, official, inputs,
                             {b: tokens[b][0] if b in ACTIVE[mode] else None for b in ("style", "content")},
                             {"style": 0.8, "content": 1.3})
    got = run(patched, inputs)
    assert relative_error(got, expected) <= 1e-4
    assert relative_error(run(unet, inputs), expected) > 1e-3  # the reference really changes the output


@pytest.mark.parametrize("combine", ["average", "concat"])
def test_several_references_layer_weights_and_a_separate_content_reference(comfy, unet, official, deadiff, inputs, combine):
    from deadiff_core.layer_weights import parse_layer_weights

    g = torch.Generator().manual_seed(16)
    styles = ReferenceTokens(style=torch.randn(2, 16, 768, generator=g), content=torch.randn(2, 16, 768, generator=g))
    content = ReferenceTokens(style=torch.randn(1, 16, 768, generator=g), content=torch.randn(1, 16, 768, generator=g))
    layer_weights = parse_layer_weights("1, 0.5, 2, 1, 0, 1, 1.5, 1, 1, 0.25, 1, 1, 1, 1, 3, 1")
    patched = apply(unet, deadiff, styles, content, mode="style and content", weight=0.9, style_weight=1.1,
                                 content_weight=0.7, layer_weights=layer_weights, combine=combine)
    style_rows = torch.cat([styles.style[0], styles.style[1]]) if combine == "concat" else (styles.style[0] + styles.style[1]) / 2
    expected = reference_run(unet, official, inputs, {"style": style_rows, "content": content.content[0]},
                             {"style": 0.9 * 1.1, "content": 0.9 * 0.7}, layer_weights)
    assert relative_error(run(patched, inputs), expected) <= 1e-4


@pytest.mark.parametrize("mode", ["style", "content", "style and content"])
def test_every_layer_is_reached_with_its_branch(comfy, unet, deadiff, tokens, inputs, mode):
    patched = apply(unet, deadiff, tokens, mode=mode)
    replace = patched.model_options["transformer_options"]["patches_replace"]["attn2"]
    reached = {}
    for key, patch in list(replace.items()):
        def recorder(q, k, v, extra_options, patch=patch, key=key):
            layer_tokens = patch.injection.layer_tokens["positive"][patch.layer.index]
            branch = next((b for b in ("style", "content") if torch.equal(layer_tokens, tokens[b][0])), "zeros")
            reached[key] = (extra_options["block"], branch)
            return patch(q, k, v, extra_options)
        replace[key] = recorder
    run(patched, inputs)
    expected = {key: (key, branch if branch in ACTIVE[mode] else "zeros") for key, _, _, branch in SPEC_LAYERS}
    assert reached == expected
    assert ("middle", 0) in reached


def test_unconditional_pass_and_outside_schedule_get_zero_tokens(comfy, unet, official, deadiff, tokens, inputs):
    zero = reference_run(unet, official, inputs, {"style": None, "content": None}, {"style": 1.0, "content": 1.0})
    outside = apply(unet, deadiff, tokens, mode="style and content", start_sigma=4.0, end_sigma=0.0)  # sigma 5 is earlier
    assert relative_error(run(outside, inputs), zero) <= 1e-4
    inside = apply(unet, deadiff, tokens, mode="style and content", start_sigma=6.0, end_sigma=4.0)
    assert relative_error(run(inside, inputs), zero) > 1e-3
    # a batch of unconditional rows only sees zero tokens in every layer
    both_uncond = run(apply(unet, deadiff, tokens, mode="style and content"), inputs, cond_or_uncond=(1, 1))
    plain_zero = reference_run(unet, official, inputs, {"style": None, "content": None}, {"style": 1.0, "content": 1.0})
    assert relative_error(both_uncond[1], plain_zero[1]) <= 1e-4


def test_mask_of_ones_is_no_mask_and_of_zeros_is_zero_tokens(comfy, unet, deadiff, tokens, inputs):
    plain = run(apply(unet, deadiff, tokens, mode="style"), inputs)
    ones = run(apply(unet, deadiff, tokens, mode="style", mask=torch.ones(1, 64, 64)), inputs)
    assert torch.equal(ones, plain)
    zeros = run(apply(unet, deadiff, tokens, mode="style", mask=torch.zeros(1, 64, 64)), inputs)
    assert torch.equal(zeros, run(apply(unet, deadiff, tokens, mode="style", weight=0.0), inputs))
    half = torch.zeros(1, 64, 64)
    half[:, :, :32] = 1
    left = run(apply(unet, deadiff, tokens, mode="style", mask=half), inputs)
    assert relative_error(left, plain) > 1e-4 and relative_error(left, zeros) > 1e-4


def test_input_model_is_never_mutated_and_clones_share_weights(comfy, unet, deadiff, tokens):
    before = repr(unet.model_options)
    patched = apply(unet, deadiff, tokens)
    assert repr(unet.model_options) == before and patched is not unet
    clone = patched.clone()
    a = patched.model_options["transformer_options"]["patches_replace"]["attn2"]
    b = clone.model_options["transformer_options"]["patches_replace"]["attn2"]
    assert all(a[k] is not b[k] and a[k].injection is b[k].injection for k in a)  # own patch, shared weights
    assert set(map(id, clone.model_patches_models())) == {id(deadiff.projections_patcher)}
    clone.model_patches_to(torch.device("cpu"))  # what ComfyUI calls before sampling
    clone.model_patches_to(torch.float16)
    assert clone.model_options["transformer_options"]["patches_replace"]["attn2"] == b


def test_image_keys_values_are_computed_once_per_generation(comfy, unet, deadiff, tokens, inputs, monkeypatch):
    calls = []
    layer0 = deadiff.adapter.projections[0].i_to_k
    original = layer0.forward
    monkeypatch.setattr(layer0, "forward", lambda x: calls.append(1) or original(x))
    patched = apply(unet, deadiff, tokens)
    for _ in range(3):
        run(patched, inputs)
    assert len(calls) == 1


def test_wraps_an_existing_patch_and_composes_with_a_second_apply(comfy, unet, deadiff, tokens, inputs):
    from comfy.ldm.modules.attention import optimized_attention

    seen = []

    def other_pack(q, k, v, extra_options):
        seen.append(k.shape[1])
        return optimized_attention(q, k, v, extra_options["n_heads"])

    earlier = unet.clone()
    earlier.set_model_attn2_replace(other_pack, "input", 1)
    twice = apply(apply(earlier, deadiff, tokens), deadiff, tokens, mode="style and content")
    assert torch.isfinite(run(twice, inputs)).all()
    assert seen == [77 + 16 + 16]  # text + first apply's tokens + second apply's, reaching the other pack
    later = twice.clone()
    later.set_model_attn2_replace(other_pack, "output", 9)  # a pack patching after us replaces one layer
    assert torch.isfinite(run(later, inputs)).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_runs_in_the_models_dtype(comfy, deadiff, tokens, dtype):
    from deadiff_core.comfy_patch import DEADiffAttentionPatch, Injection, InjectionSettings
    from deadiff_core.layers import SD15_LAYERS

    injection = Injection(deadiff, tokens, InjectionSettings())
    patch = DEADiffAttentionPatch(injection, SD15_LAYERS[0])
    g = torch.Generator().manual_seed(15)
    q, k, v = (torch.randn(2, 64, 320, generator=g) for _ in range(3))
    options = {"n_heads": 8, "cond_or_uncond": [0, 1]}
    reference = patch(q, k, v, options)
    low = patch(q.to(dtype), k.to(dtype), v.to(dtype), options)
    assert low.dtype == dtype
    assert relative_error(low.float(), reference) < 2e-2


@pytest.mark.parametrize("family,changes", [("SD2.x", {"context_dim": 1024, "num_head_channels": 64}),
                                            ("SDXL", "sdxl")])
def test_other_model_families_are_refused(comfy, deadiff, tokens, family, changes):
    import comfy.model_detection
    import comfy.model_patcher

    if changes == "sdxl":
        unet_config = {"model_channels": 320, "use_linear_in_transformer": True, "transformer_depth": [0, 0, 2, 2, 10, 10],
                       "context_dim": 2048, "adm_in_channels": 2816, "use_temporal_attention": False}
        config = dict(SD15_UNET, num_res_blocks=[2, 2, 2], channel_mult=[1, 2, 4], transformer_depth_middle=10,
                      transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10], num_heads=-1, num_head_channels=64,
                      num_classes="sequential", **unet_config)
    else:
        config = dict(SD15_UNET, num_heads=-1, use_linear_in_transformer=True, **changes)
    model_config = comfy.model_detection.model_config_from_unet_config(dict(config, dtype=torch.float32))
    model = model_config.get_model({}, device="meta")
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))
    with pytest.raises(ValueError, match="for SD1.x models") as info:
        apply(patcher, deadiff, tokens)
    assert type(model_config).__name__ in str(info.value)


def test_a_style_only_adapter_gives_the_same_style_mode_and_refuses_content(comfy, unet, official, deadiff, tokens, inputs):
    from deadiff_core.comfy_adapter import ComfyDEADiff

    style_only = ComfyDEADiff(adapter_from_state_dict(official, "<memory>", "official checkpoint", branches=("style",)))
    assert style_only.info.branches == ("style",) and len(style_only.adapter.projections.layers) == 11
    assert torch.equal(run(apply(unet, style_only, tokens, mode="style"), inputs),
                       run(apply(unet, deadiff, tokens, mode="style"), inputs))
    with pytest.raises(ValueError, match="loaded with style only"):
        apply(unet, style_only, tokens, mode="content")


def test_a_pack_that_adds_to_our_patch_adds_its_term_within_its_sigmas_and_only_on_its_clone(comfy, unet, deadiff, tokens):
    """IPAdapter_plus's protocol for a key that already holds a replace patch: patch.add(callback, **kwargs)."""
    patched = apply(unet, deadiff, tokens)
    patch = patched.model_options["transformer_options"]["patches_replace"]["attn2"][("input", 1)]
    g = torch.Generator().manual_seed(17)
    q, k, v = (torch.randn(2, 64, 320, generator=g) for _ in range(3))
    options = {"n_heads": 8, "cond_or_uncond": [0, 1], "sigmas": torch.tensor([5.0, 5.0])}
    alone = patch(q, k, v, options)
    seen = []

    def term(out, q, k, v, extra_options, scale, **kwargs):
        seen.append((out, k.shape[1]))
        return scale * q

    later = patched.clone().model_options["transformer_options"]["patches_replace"]["attn2"][("input", 1)]
    later.add(term, scale=0.5, sigma_start=6.0, sigma_end=4.0)
    assert torch.equal(later(q, k, v, options), alone + 0.5 * q)
    assert torch.equal(seen[0][0], alone) and seen[0][1] == 64  # it sees our output and the text keys
    outside = dict(options, sigmas=torch.tensor([3.0, 3.0]))
    assert torch.equal(later(q, k, v, outside), patch(q, k, v, outside))
    assert patch.added == [] and torch.equal(patch(q, k, v, options), alone)  # the MODEL it came from is unchanged


# ---------------------------------------------------------------- per latent, negative reference, key/value weights

def two_latents(inputs):
    """The 2-row [cond ; uncond] inputs as two latents: rows [cond 0, cond 1 ; uncond 0, uncond 1]."""
    x, sigma, context = inputs
    g = torch.Generator().manual_seed(18)
    second = torch.randn(1, *x.shape[1:], generator=g)
    return torch.cat([x[:1], second, x[1:], second]), sigma.repeat(2), torch.cat([context[:1]] * 2 + [context[1:]] * 2)


@pytest.mark.parametrize("mode", ["style", "style and content"])
def test_per_latent_references_give_each_latent_its_own(comfy, unet, official, deadiff, inputs, mode):
    g = torch.Generator().manual_seed(19)
    two = ReferenceTokens(style=torch.randn(2, 16, 768, generator=g), content=torch.randn(2, 16, 768, generator=g))
    batch = two_latents(inputs)
    patched = apply(unet, deadiff, two, mode=mode, weight=1.2, combine="per latent")
    got = run(patched, batch, cond_or_uncond=(0, 1))
    # rows [cond 0, cond 1 ; uncond 0, uncond 1]: reference i in cond row i, zero tokens elsewhere
    rows = {b: torch.cat([two[b], torch.zeros(2, 16, 768)]) if b in ACTIVE[mode] else torch.zeros(4, 16, 768)
            for b in ("style", "content")}
    expected = reference_run(unet, official, batch, rows, {"style": 1.2, "content": 1.2})
    assert relative_error(got, expected) <= 1e-4
    # latent i is what a run with reference i alone gives it
    x, sigma, context = batch
    for i in range(2):
        alone = ReferenceTokens(style=two.style[i:i + 1], content=two.content[i:i + 1])
        single = run(apply(unet, deadiff, alone, mode=mode, weight=1.2), (x[[i, i + 2]], sigma[:2], context[[i, i + 2]]))
        assert relative_error(got[[i, i + 2]], single) <= 1e-4


def test_per_latent_references_must_match_the_latents(comfy, unet, deadiff, inputs):
    g = torch.Generator().manual_seed(20)
    three = ReferenceTokens(style=torch.randn(3, 16, 768, generator=g), content=torch.randn(3, 16, 768, generator=g))
    with pytest.raises(ValueError, match="3 references for a batch of 2 latents"):
        run(apply(unet, deadiff, three, combine="per latent"), two_latents(inputs))


@pytest.mark.parametrize("mode", ["style", "style and content"])
def test_the_negative_pass_reads_the_negative_reference_by_the_same_mode(comfy, unet, official, deadiff, tokens, inputs,
                                                                          mode):
    g = torch.Generator().manual_seed(21)
    negative = ReferenceTokens(style=torch.randn(1, 16, 768, generator=g), content=torch.randn(1, 16, 768, generator=g))
    patched = apply(unet, deadiff, tokens, negative_tokens=negative, mode=mode, weight=0.7)
    rows = {b: torch.stack([tokens[b][0], negative[b][0]]) if b in ACTIVE[mode] else None for b in ("style", "content")}
    expected = reference_run(unet, official, inputs, rows, {"style": 0.7, "content": 0.7})
    got = run(patched, inputs)
    assert relative_error(got, expected) <= 1e-4
    without = run(apply(unet, deadiff, tokens, mode=mode, weight=0.7), inputs)
    assert torch.equal(got[0], without[0])                   # the conditional row is untouched
    assert relative_error(got[1], without[1]) > 1e-3         # the negative row reads it
    # outside start/end the negative pass sees zero tokens too
    outside = apply(unet, deadiff, tokens, negative_tokens=negative, mode=mode, start_sigma=4.0, end_sigma=0.0)
    zero = reference_run(unet, official, inputs, {"style": None, "content": None}, {"style": 1.0, "content": 1.0})
    assert relative_error(run(outside, inputs), zero) <= 1e-4


def test_a_negative_reference_from_another_deadiff_model_is_refused(comfy, unet, deadiff, tokens):
    other = ReferenceTokens(style=torch.randn(1, 32, 768), content=torch.randn(1, 32, 768))  # 32 queries, not 16
    with pytest.raises(ValueError, match="negative reference's style tokens are 32 per reference"):
        apply(unet, deadiff, tokens, negative_tokens=other)
    style_only = ReferenceTokens(style=tokens.style)
    with pytest.raises(ValueError, match="content negative reference only has style"):
        apply(unet, deadiff, tokens, negative_tokens=style_only, mode="style and content")


@pytest.mark.parametrize("combine", ["concat", "per latent"])
def test_a_negative_reference_kept_apart_needs_as_many_references(comfy, unet, deadiff, tokens, combine):
    """Concatenated or per latent, the negative rows must join as many image tokens as the conditional ones."""
    g = torch.Generator().manual_seed(22)
    two = ReferenceTokens(style=torch.randn(2, 16, 768, generator=g), content=torch.randn(2, 16, 768, generator=g))
    with pytest.raises(ValueError, match=rf"with combine '{combine}' the negative reference needs as many references "
                                         r"as the style reference \(2\), but it has 1"):
        apply(unet, deadiff, two, negative_tokens=tokens, combine=combine)
    apply(unet, deadiff, two, negative_tokens=tokens, combine="average")  # averaged, both are 16 tokens


def test_key_and_value_weights_scale_the_image_keys_and_values_apart(comfy, unet, official, deadiff, tokens, inputs):
    patched = apply(unet, deadiff, tokens, mode="style and content", weight=0.9, style_weight=1.5,
                    key_weight=0.5, value_weight=2.0)
    expected = reference_run(unet, official, inputs, {b: tokens[b][0] for b in ("style", "content")},
                             {"style": 0.9 * 1.5 * 0.5, "content": 0.9 * 0.5},
                             value_weights={"style": 0.9 * 1.5 * 2.0, "content": 0.9 * 2.0})
    assert relative_error(run(patched, inputs), expected) <= 1e-4
    # 1.0 and 1.0 is the plain weight, bit for bit
    assert torch.equal(run(apply(unet, deadiff, tokens, weight=0.9, key_weight=1.0, value_weight=1.0), inputs),
                       run(apply(unet, deadiff, tokens, weight=0.9), inputs))


@pytest.mark.parametrize("name", ["key_weight", "value_weight"])
def test_key_and_value_weights_must_be_finite(comfy, unet, deadiff, tokens, name):
    with pytest.raises(ValueError, match=f"{name} must be a finite number"):
        apply(unet, deadiff, tokens, **{name: float("nan")})
