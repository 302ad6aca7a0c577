"""What each training step draws (rows, kinds, noise, timesteps, token drops) and the SD1.5 noise
schedule, against ComfyUI's own model_sampling and written-out expectations."""
import collections
from dataclasses import dataclass

import pytest
import torch

from deadiff_core.train.plan import LocalBatches, TrainingPlan, local_slice


@dataclass(frozen=True)
class Row:
    kind: str


PAIRS = [Row("style")] * 7 + [Row("content")] * 5 + [Row("recon")] * 3
DROP = {"style": 0.15, "content": 0.15, "recon": 0.0}


def plan(global_batch=4, ratios=None, seed=0):
    return TrainingPlan(PAIRS, seed, ratios or {"style": 1, "content": 1, "recon": 1}, DROP, global_batch, (4, 2, 2))


@pytest.mark.no_comfyui
@pytest.mark.fast
def test_processes_and_micro_batches_split_one_global_batch():
    """One process x 4, two x 2, four x 1, two x 1 x 2 accumulation: the same rows, in the same places."""
    for step in range(6):
        rows = plan().rows(step)
        for world, batch, accumulation in ((1, 4, 1), (2, 2, 1), (4, 1, 1), (2, 1, 2), (1, 2, 2)):
            local = [rows[local_slice(m, r, batch, world)] for m in range(accumulation) for r in range(world)]
            assert torch.equal(torch.cat(local), rows)
    batches = LocalBatches(plan(), start_step=2, max_steps=4, accumulation=2, rank=1, batch_size=1, world_size=2)
    expected = [plan().rows(s)[i].item() for s in (2, 3) for i in (1, 3)]
    assert [b[0] for b in batches] == expected and len(batches) == 4


@pytest.mark.no_comfyui
@pytest.mark.fast
def test_any_step_is_the_same_whatever_was_asked_before():
    sequential = plan()
    in_order = [sequential.rows(s) for s in range(40)]
    jumping = plan()
    for step in (33, 5, 39, 0, 17):
        assert torch.equal(jumping.rows(step), in_order[step])
    for a, b in zip((plan().draws(s) for s in range(3)), (plan().draws(s) for s in range(3))):
        assert a.kind == b.kind and torch.equal(a.noise, b.noise) and torch.equal(a.timesteps, b.timesteps)
    assert not torch.equal(plan(seed=1).draws(0).noise, plan().draws(0).noise)


@pytest.mark.no_comfyui
@pytest.mark.fast
def test_each_kind_is_an_epoch_by_epoch_permutation_of_its_rows():
    p = plan(global_batch=1)
    seen = collections.defaultdict(list)
    for step in range(300):
        seen[p.kind_at(step)].append(p.rows(step).item())
    for kind in ("style", "content", "recon"):
        rows = [i for i, r in enumerate(PAIRS) if r.kind == kind]
        stream = seen[kind]
        for epoch in range(len(stream) // len(rows)):
            assert sorted(stream[epoch * len(rows):(epoch + 1) * len(rows)]) == rows


@pytest.mark.no_comfyui
@pytest.mark.fast
def test_kinds_follow_the_ratios_and_drops_follow_the_kind():
    p = plan(global_batch=8, ratios={"style": 3, "content": 1, "recon": 0})
    kinds = collections.Counter(p.kind_at(s) for s in range(4000))
    assert "recon" not in kinds and abs(kinds["style"] / 4000 - 0.75) < 0.03
    dropped = collections.defaultdict(list)
    for step in range(600):
        draws = plan(global_batch=8).draws(step)
        dropped[draws.kind].append(draws.dropped.float().mean().item())
        assert draws.timesteps.min() >= 0 and draws.timesteps.max() < 1000 and draws.noise.shape == (8, 4, 2, 2)
    assert all(abs(sum(v) / len(v) - 0.15) < 0.03 for k, v in dropped.items() if k != "recon")
    assert sum(dropped["recon"]) == 0
    with pytest.raises(ValueError, match="no recon pairs"):
        TrainingPlan([Row("style")], 0, {"style": 1, "recon": 1}, DROP, 1, (4, 2, 2))


@pytest.mark.fast
def test_noise_schedule_and_latent_scale_are_comfyuis_sd15(comfy):
    from deadiff_core.train.objective import SD15NoiseSchedule
    from deadiff_core.train.tiny import tiny_unet

    model = tiny_unet()[0].model
    sampling, schedule = model.model_sampling, SD15NoiseSchedule()
    alphas = schedule.alphas_cumprod
    assert torch.allclose(((1 - alphas) / alphas).sqrt().float(), sampling.sigmas, rtol=1e-5)
    assert alphas[0].item() == pytest.approx(1 - 0.00085) and alphas[-1].item() == pytest.approx(0.0047, abs=1e-4)
    g = torch.Generator().manual_seed(0)
    latents, noise, t = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g), torch.tensor([0, 499, 999])
    sigma = sampling.sigmas[t]
    comfy_input = sampling.calculate_input(sigma, sampling.noise_scaling(sigma, noise, latents))  # what ComfyUI feeds its UNet
    assert torch.allclose(schedule.add_noise(latents, noise, t), comfy_input, atol=1e-5)
    assert torch.equal(sampling.timestep(sigma).long(), t)  # the UNet sees the same timestep index
    assert torch.equal(model.latent_format.process_in(latents), latents * 0.18215)
