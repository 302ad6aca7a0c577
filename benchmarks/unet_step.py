"""Per-step cost of DEADiff: ComfyUI's SD1.5 UNet forward with and without the injection, side by side.

    python -m benchmarks.unet_step [--tiny] [--rounds N] [--size PX] [--profile]
                                   [--threads N] [--cpu-time] [--pytorch-attention]

Full SD1.5 architecture with random weights (scripts/sd15.py), batch 2 = the conditional and unconditional
CFG rows of one latent, as ComfyUI's sampler runs them; per-latent references need several latents, so they
run on 2 (batch 4). fp32 on the CPU, fp16 on a GPU. The variants run interleaved and each is reported as a
ratio to the unpatched step with as many latents, of the same round.
"""

import torch

from benchmarks.harness import add_arguments, command_line, describe_run, device_and_dtype, interleaved, ratios_to, setup, spread
from deadiff_core.checkpoint import adapter_from_state_dict
from deadiff_core.synthetic import OfficialLayout, official_state_dict
from deadiff_core.tokens import ReferenceTokens
from scripts.sd15 import sd15_unet_model

# Per step only the i_to_k/v projections act (real token width 768 and layer widths); a small Q-Former will do.
LAYOUT = OfficialLayout(vision_width=32, vision_blocks=1, image_size=28, qformer_layers=1, intermediate=64, vocab=4200,
                        positions=16, proj_hidden=64)
BASELINE, TWO_LATENT_BASELINE = "unpatched", "unpatched, 2 latents"
PER_LATENT = "style, per-latent references"
TWO_LATENTS = (TWO_LATENT_BASELINE, PER_LATENT)  # run on 2 latents, the others on 1


def baseline_of(name):
    """The unpatched step a variant is compared to: the one with as many latents."""
    return TWO_LATENT_BASELINE if name in TWO_LATENTS else BASELINE


def unet_on(comfy, device, dtype):
    """The random SD1.5 MODEL (built on the CPU in fp32) moved to where the benchmark runs."""
    patcher = sd15_unet_model(comfy, seed=0)
    model = patcher.model
    model.diffusion_model.to(device, dtype)
    model.diffusion_model.dtype = dtype  # apply_model casts its inputs to this
    model.model_sampling.to(device)
    return patcher


def variants(unet, size):
    """The MODELs to compare: unpatched and DEADiff Apply's main settings."""
    from deadiff_core.comfy_adapter import ComfyDEADiff
    from deadiff_core.comfy_patch import InjectionSettings, apply_deadiff

    official = official_state_dict(LAYOUT, seed=1, with_vision=False, with_other_parts=False)
    deadiff = ComfyDEADiff(adapter_from_state_dict(official, "<memory>", "official checkpoint"))
    g = torch.Generator().manual_seed(2)
    one, negative, two, four = (ReferenceTokens(style=torch.randn(n, 16, 768, generator=g),
                                                content=torch.randn(n, 16, 768, generator=g)) for n in (1, 1, 2, 4))
    left_half = torch.zeros(1, size, size)
    left_half[:, :, : size // 2] = 1
    return {
        BASELINE: unet,
        "style": apply_deadiff(unet, deadiff, one, InjectionSettings(mode="style")),
        "style and content": apply_deadiff(unet, deadiff, one, InjectionSettings(mode="style and content")),
        "style, 4 references concatenated": apply_deadiff(unet, deadiff, four, InjectionSettings(combine="concat")),
        "style, with a mask": apply_deadiff(unet, deadiff, one, InjectionSettings(mask=left_half)),
        "style, negative reference": apply_deadiff(unet, deadiff, one, InjectionSettings(), negative_tokens=negative),
        TWO_LATENT_BASELINE: unet,
        PER_LATENT: apply_deadiff(unet, deadiff, two, InjectionSettings(combine="per latent")),
    }


def step_inputs(size, device, dtype, latents=1):
    """What the sampler passes for one step of a [cond ; uncond] batch of `latents` latents each: latents, sigmas
    and 77 text tokens."""
    g = torch.Generator().manual_seed(3)
    side, rows = size // 8, 2 * latents
    return (torch.randn(rows, 4, side, side, generator=g).to(device, dtype), torch.full((rows,), 5.0, device=device),
            torch.randn(rows, 77, 768, generator=g).to(device, dtype))


def step(model, x, sigma, context):
    """One sampler step's model call, as comfy.samplers.calc_cond_batch makes it for [cond ; uncond]."""
    options = dict(model.model_options["transformer_options"], cond_or_uncond=[0, 1], sigmas=sigma)
    return model.model.apply_model(x, sigma, c_crossattn=context, transformer_options=options)


def profile(models, inputs, top=8):
    """Where each DEADiff variant's extra time goes: one profiled step per variant (on its `inputs[name]`), with
    operator calls told apart by input shapes, so that a cross-attention call with 93 keys is not lumped with a
    self-attention one. Shown: the calls whose count differs from its unpatched step's (the others only differ by
    noise)."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    on_gpu = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    stats = {}
    for name, model in models.items():
        with torch_profile(activities=activities, record_shapes=True) as prof:
            step(model, *inputs[name])
        stats[name] = {f"{e.key} {[shape for shape in e.input_shapes if shape]}":
                       (e.count, (e.self_device_time_total if on_gpu else e.self_cpu_time_total) / 1e3)
                       for e in prof.key_averages(group_by_input_shape=True)}
    for name, calls in stats.items():
        baseline = baseline_of(name)
        if name == baseline:
            continue
        base = stats[baseline]
        changed = {op: calls.get(op, (0, 0.0))[1] - base.get(op, (0, 0.0))[1] for op in {*base, *calls}
                   if calls.get(op, (0, 0.0))[0] != base.get(op, (0, 0.0))[0]}
        total, base_total = (sum(t for _, t in table.values()) for table in (calls, base))
        print(f"\nprofile, {name} minus {baseline}: {total:.0f} ms vs {base_total:.0f} ms of operator self time; "
              f"{sum(changed.values()):+.0f} ms net in the calls whose count differs")
        print("| operator [input shapes] | calls | self ms | difference ms |")
        print("| --- | --- | --- | --- |")
        for op in sorted(changed, key=lambda op: -abs(changed[op]))[:top]:
            (base_count, base_ms), (count, ms) = base.get(op, (0, 0.0)), calls.get(op, (0, 0.0))
            print(f"| {op} | {base_count} -> {count} | {base_ms:.0f} -> {ms:.0f} | {changed[op]:+.0f} |")


def main():
    parser = command_line(__doc__, "for CI: 64 px (latent 8x8), 1 round")
    parser.add_argument("--rounds", type=int, help="timed rounds after one warm-up round (default 5, --tiny 1)")
    parser.add_argument("--size", type=int, help="image side in pixels, a multiple of 64 (default 512, --tiny 64)")
    parser.add_argument("--profile", action="store_true",
                        help="then profile one step per variant: which operators take the extra time")
    add_arguments(parser)
    args = parser.parse_args()
    comfy, clock, clock_name = setup(args)
    size = args.size or (64 if args.tiny else 512)
    rounds = args.rounds or (1 if args.tiny else 5)

    device, dtype = device_and_dtype()
    models = variants(unet_on(comfy, device, dtype), size)
    batches = {latents: step_inputs(size, device, dtype, latents) for latents in (1, 2)}
    inputs = {name: batches[2 if name in TWO_LATENTS else 1] for name in models}
    latent = size // 8

    with torch.inference_mode():
        cases = {name: lambda m=model, i=inputs[name]: step(m, *i) for name, model in models.items()}
        times, others = interleaved(cases, rounds, clock)
        ratios = {name: ratios_to(times, baseline_of(name))[name] for name in models}
        attention = comfy.ldm.modules.attention.optimized_attention.__name__
        print(f"SD1.5 UNet forward, {size}x{size} px (latent {latent}x{latent}), batch 2 per latent (cond + uncond), "
              f"1 latent ({', '.join(TWO_LATENTS)}: 2), {dtype} on {device}, {attention}; "
              f"{describe_run(rounds, clock_name, others)}")
        print("| variant | seconds per step (median, min-max) | ratio to unpatched with as many latents (median, min-max) |")
        print("| --- | --- | --- |")
        for name in models:
            print(f"| {name} | {spread(times[name], 3)} | {spread(ratios[name], 3)} |")
        if args.profile:
            profile(models, inputs)


if __name__ == "__main__":
    main()
