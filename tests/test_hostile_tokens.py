"""Tokens no DEADiff encoder makes (shared files, hand-edited or damaged ones): refused from the file's header
or against a bound derived from the model's weights, with a clear message, through the real server and with
the server's peak memory measured; and attention that overflows anyway is reported instead of a black image."""
import json
import math
import struct

import pytest
import torch

from deadiff_core.checkpoint import adapter_from_state_dict
from deadiff_core.synthetic import TINY, official_state_dict
from deadiff_core.token_bounds import MAX_REFERENCES, MAX_TOKENS_PER_REFERENCE, check_magnitudes, token_bound
from deadiff_core.token_io import FORMAT, VERSION, load_tokens
from deadiff_core.tokens import ReferenceTokens
from scripts.graphs import E2E_LAYOUT, assert_refused, assert_refused_and_still_serving, assert_still_serving, graph, run_ok

GiB = 2 ** 30


def tokens_file(path, shapes, fill=None):
    """A DEADiff tokens file in safetensors' layout (8-byte header length, JSON header, data) whose tensors are
    `shapes` (float32): zeros left sparse on disk unless `fill`, so a 600 GB file costs nothing to write."""
    header, offset = {"__metadata__": {"format": FORMAT, "version": VERSION}}, 0
    for name, shape in shapes.items():
        size = 4 * math.prod(shape)
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded)
        if fill is not None:
            f.write(struct.pack("<f", fill) * (offset // 4))
        f.truncate(8 + len(encoded) + offset)
    return path


# ---------------------------------------------------------------- the bounds themselves

@pytest.mark.fast
def test_a_layer_norm_output_reaches_sqrt_d_minus_1_and_no_more():
    """The fact the magnitude bound rests on, checked with torch's own LayerNorm."""
    width = 768
    spike = torch.zeros(width, dtype=torch.float64)
    spike[5] = 1.0  # all of the variance in one channel: the extreme case
    z = torch.nn.functional.layer_norm(spike, (width,), eps=0.0)
    assert math.isclose(z[5].item(), math.sqrt(width - 1), rel_tol=1e-12)
    random = torch.nn.functional.layer_norm(torch.randn(1000, width, dtype=torch.float64) ** 3, (width,), eps=0.0)
    assert random.abs().max() < math.sqrt(width - 1)


@pytest.mark.fast
def test_the_encoder_never_exceeds_its_bound_even_on_extreme_inputs():
    adapter = adapter_from_state_dict(official_state_dict(TINY, seed=3, scale=0.5), "<memory>", "official checkpoint")
    g = torch.Generator().manual_seed(4)
    for branch, encoder in adapter.encoder.branches.items():
        bound = token_bound(encoder)
        for scale in (1.0, 1e3, 1e6):
            hidden = torch.randn(8, TINY.vision_tokens, TINY.vision_width, generator=g) * scale
            tokens = encoder(hidden).double()
            assert (tokens.abs().amax(dim=(0, 1)) <= bound).all(), (branch, scale)
        check_magnitudes(tokens, bound, branch)  # what an encoder makes passes
        with pytest.raises(ValueError, match=f"{branch} tokens reach 1e\\+30 in channel \\d+, where"):
            check_magnitudes(torch.full_like(tokens, 1e30), bound, branch)


@pytest.mark.fast
@pytest.mark.parametrize("shape,expected", [
    ((1, 0, 768), "no tokens per reference"),
    ((1, MAX_TOKENS_PER_REFERENCE + 1, 768), f"takes at most {MAX_TOKENS_PER_REFERENCE}"),
    ((MAX_REFERENCES + 1, 16, 8), f"at most {MAX_REFERENCES}"),
])
def test_token_counts_the_pack_cannot_use_are_refused(shape, expected):
    with pytest.raises(ValueError, match=expected):
        ReferenceTokens(style=torch.zeros(shape))


@pytest.mark.fast
def test_a_batch_of_more_references_than_the_pack_takes_is_refused_before_encoding():
    from deadiff_core.images import check_reference_images

    check_reference_images(torch.rand(MAX_REFERENCES, 32, 32, 3))
    with pytest.raises(ValueError, match=f"holds {MAX_REFERENCES + 1} references; DEADiff takes at most"):
        check_reference_images(torch.rand(MAX_REFERENCES + 1, 32, 32, 3))


@pytest.mark.fast
def test_huge_tokens_files_are_refused_from_their_header(tmp_path):
    # 1.2 GB of tokens for one reference, and 640 GB of references (sparse: never written, never read)
    many_tokens = tokens_file(tmp_path / "many_tokens.safetensors", {"style": (1, 400000, 768)})
    with pytest.raises(ValueError, match="400000 tokens per reference"):
        load_tokens(many_tokens)
    wide = tokens_file(tmp_path / "wide.safetensors", {"style": (MAX_REFERENCES, 16, 40_000_000)})
    with pytest.raises(ValueError, match=r"would not fit in the 16.0 GiB of memory free"):
        load_tokens(wide, free_memory=16 * GiB)


# ---------------------------------------------------------------- through the server

def peak_rss_above_baseline(server, run):
    """run(), then how far the server process' peak resident memory rose above where it stood before (Linux:
    writing 5 to clear_refs resets the peak, VmHWM)."""
    pid = server.process.pid
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")

    def status(field):
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))
    baseline = status("VmRSS")
    run()
    return status("VmHWM") - baseline


def load_tokens_graph(name):
    prompt = graph()
    prompt["7"] = {"class_type": "DEADiffLoadTokens", "inputs": {"tokens_file": name}}
    return prompt


@pytest.mark.parametrize("name,shape,expected", [
    ("many_tokens.safetensors", (1, 400000, 768), ["DEADiff Load Tokens", "400000 tokens per reference", "at most 64"]),
    ("many_references.safetensors", (1000, 16, 768), ["DEADiff Load Tokens", "1000 references", "at most 256"]),
    ("no_tokens.safetensors", (1, 0, 768), ["DEADiff Load Tokens", "no tokens per reference"]),
    ("too_big.safetensors", (MAX_REFERENCES, 16, 40_000_000), ["DEADiff Load Tokens", "would not fit", "of memory free"]),
])
def test_tokens_files_the_pack_cannot_use_are_refused_without_loading_them(server, name, shape, expected):
    tokens_file(server.input_path(name), {"style": shape, "content": shape})
    run_ok(server, graph())  # every other node's output cached: the refused prompt runs Load Tokens alone
    rise = peak_rss_above_baseline(server, lambda: assert_refused(server, load_tokens_graph(name), expected))
    print(f"{name}: the server's peak RSS rose {rise / 2**20:.0f} MiB above its baseline")
    assert rise < 2 * GiB, f"the server's peak memory rose {rise / GiB:.2f} GiB"
    assert_still_serving(server)


def test_tokens_beyond_what_the_encoder_can_make_are_refused_by_apply(server):
    tokens_file(server.input_path("extreme.safetensors"), {"style": (1, 16, 768), "content": (1, 16, 768)}, fill=1e30)
    assert_refused_and_still_serving(server, load_tokens_graph("extreme.safetensors"),
                                     ["DEADiff Apply", "style tokens reach 1e+30", "at most", "not made by this model"])


# ---------------------------------------------------------------- the last line of defence

def test_attention_that_overflows_is_reported_instead_of_a_black_image(comfy):
    import comfy.sample

    from deadiff_core.comfy_adapter import ComfyDEADiff
    from deadiff_core.comfy_patch import InjectionSettings, apply_deadiff
    from deadiff_core.finite_check import NonFiniteAttentionError
    from scripts.sd15 import sd15_unet_model

    deadiff = ComfyDEADiff(adapter_from_state_dict(
        official_state_dict(E2E_LAYOUT, seed=12, with_vision=False, with_other_parts=False), "<memory>", "official checkpoint"))
    g = torch.Generator().manual_seed(5)
    tokens = ReferenceTokens(style=torch.randn(1, 16, 768, generator=g), content=torch.randn(1, 16, 768, generator=g))
    unet = sd15_unet_model(comfy, seed=11)
    text = [[torch.randn(1, 77, 768, generator=g), {}]]
    latent = torch.zeros(1, 4, 8, 8)

    def sample(model):
        noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(6))
        return comfy.sample.sample(model, noise, 1, 8.0, "euler", "normal", text, text, latent, disable_pbar=True)

    assert torch.isfinite(sample(apply_deadiff(unet, deadiff, tokens, InjectionSettings(weight=1.0)))).all()
    overflowing = apply_deadiff(unet, deadiff, tokens, InjectionSettings(weight=1e38))  # the core takes any finite weight
    with pytest.raises(NonFiniteAttentionError, match="cross-attention layers? [0-9, ]+ produced NaN or infinite values"):
        sample(overflowing)
