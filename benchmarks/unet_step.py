"""Per-step cost of DEADiff: ComfyUI's SD1.5 UNet forward with and without the injection, side by side.

    python -m benchmarks.unet_step [--tiny] [--rounds N] [--size PX] [--profile]
                                   [--threads N] [--cpu-time] [--pytorch-attention]

Full SD1.5 architecture with random weights (scripts/sd15.py), batch 2 = the conditional and unconditional
CFG rows, as ComfyUI's sampler runs them; fp32 on the CPU, fp16 on a GPU. The variants run interleaved and
each is reported as a ratio to the unpatched step of the same round.
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
BASELINE = "unpatched"


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
    one = ReferenceTokens(style=torch.randn(1, 16, 768, generator=g), content=torch.randn(1, 16, 768, generator=g))
    four = ReferenceTokens(style=torch.randn(4, 16, 768, generator=g), content=torch.randn(4, 16, 768, generator=g))
    left_half = torch.zeros(1, size, size)
    left_half[:, :, : size // 2] = 1
    return {
        BASELINE: unet,
        "style": apply_deadiff(unet, deadiff, one, InjectionSettings(mode="style")),
        "style and content": apply_deadiff(unet, deadiff, one, InjectionSettings(mode="style and content")),
        "style, 4 references concatenated": apply_deadiff(unet, deadiff, four, InjectionSettings(combine="concat")),
        "style, with a mask": apply_deadiff(unet, deadiff, one, InjectionSettings(mask=left_half)),
    }


def step_inputs(size, device, dtype):
    """What the sampler passes for one step of a [cond ; uncond] batch: latents, sigmas and 77 text tokens."""
    g = torch.Generator().manual_seed(3)
    latent = size // 8
    return (torch.randn(2, 4, latent, latent, generator=g).to(device, dtype), torch.tensor([5.0, 5.0], device=device),
            torch.randn(2, 77, 768, generator=g).to(device, dtype))


def step(model, x, sigma, context):
    """One sampler step's model call, as comfy.samplers.calc_cond_batch makes it for [cond ; uncond]."""
    options = dict(model.model_options["transformer_options"], cond_or_uncond=[0, 1], sigmas=sigma)
    return model.model.apply_model(x, sigma, c_crossattn=context, transformer_options=options)


def profile(models, inputs, top=8):
    """Where each DEADiff variant's extra time goes: one profiled step per variant, with operator calls told apart
    by input shapes, so that a cross-attention call with 93 keys is not lumped with a self-attention one. Shown:
    the calls whose count differs from the unpatched step's (the others only differ by noise)."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    on_gpu = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    stats = {}
    for name, model in models.items():
        with torch_profile(activities=activities, record_shapes=True) as prof:
            step(model, *inputs)
        stats[name] = {f"{e.key} {[shape for shape in e.input_shapes if shape]}":
                       (e.count, (e.self_device_time_total if on_gpu else e.self_cpu_time_total) / 1e3)
                       for e in prof.key_averages(group_by_input_shape=True)}
    base = stats[BASELINE]
    for name, calls in stats.items():
        if name == BASELINE:
            continue
        changed = {op: calls.get(op, (0, 0.0))[1] - base.get(op, (0, 0.0))[1] for op in {*base, *calls}
                   if calls.get(op, (0, 0.0))[0] != base.get(op, (0, 0.0))[0]}
        total, base_total = (sum(t for _, t in table.values()) for table in (calls, base))
        print(f"\nprofile, {name} minus {BASELINE}: {total:.0f} ms vs {base_total:.0f} ms of operator self time; "
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
    inputs = step_inputs(size, device, dtype)
    latent = size // 8

    with torch.inference_mode():
        cases = {name: lambda m=model: step(m, *inputs) for name, model in models.items()}
        times, others = interleaved(cases, rounds, clock)
        ratios = ratios_to(times, BASELINE)
        attention = comfy.ldm.modules.attention.optimized_attention.__name__
        print(f"SD1.5 UNet forward, {size}x{size} px (latent {latent}x{latent}), batch 2 (cond + uncond), {dtype} on "
              f"{device}, {attention}; {describe_run(rounds, clock_name, others)}")
        print("| variant | seconds per step (median, min-max) | ratio to unpatched (median, min-max) |")
        print("| --- | --- | --- |")
        for name in models:
            print(f"| {name} | {spread(times[name], 3)} | {spread(ratios[name], 3)} |")
        if args.profile:
            profile(models, inputs)


if __name__ == "__main__":
    main()
