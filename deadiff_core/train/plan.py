"""Which rows, noise, timesteps and token drops each optimizer step uses: a pure function of
(seed, step), never of the process count or of what ran before.

That one property gives exact resume (start at step k and everything matches the uninterrupted
run) and makes one process with batch G equal to N processes with batch G/N: each optimizer
step has one *global batch* of G = batch_size x accumulation x world_size rows, generated in
full on every process, and each (micro-batch, rank) takes its own slice, like
torch.utils.data.DistributedSampler.

Step s first picks a pair kind (the three loaders, by the configured ratios), then takes the
next G rows of that kind's stream: an endless sequence of per-epoch permutations of its rows.
"""
import random
from dataclasses import dataclass
from functools import lru_cache

import torch

from ..data.manifest import KINDS
from ..seeds import derived_seed


@dataclass(frozen=True)
class StepDraws:
    """What step s draws for its G global rows (on the CPU)."""
    kind: str
    timesteps: torch.Tensor     # [G] in [0, 1000)
    noise: torch.Tensor         # [G, C, h, w] float32
    dropped: torch.Tensor       # [G] bool: image tokens zeroed


class TrainingPlan:
    def __init__(self, pairs, seed, ratios, drop, global_batch, latent_shape, train_timesteps=1000):
        self.seed = seed
        self.global_batch = global_batch
        self.latent_shape = tuple(latent_shape)
        self.train_timesteps = train_timesteps
        self.drop = drop
        self.rows_of = {kind: [i for i, p in enumerate(pairs) if p.kind == kind] for kind in KINDS}
        self.kinds = [k for k in KINDS if ratios.get(k, 0) > 0]
        empty = [k for k in self.kinds if not self.rows_of[k]]
        if empty:
            raise ValueError(f"the manifest has no {' / '.join(empty)} pairs but data.ratios gives them weight; "
                             f"set data.ratios.{empty[0]} = 0 or add such pairs")
        self.weights = [ratios[k] for k in self.kinds]
        self._uses = {k: 0 for k in KINDS}
        self._next_step = 0

    def kind_at(self, step):
        return random.Random(derived_seed(self.seed, "kind", step)).choices(self.kinds, self.weights)[0]

    @lru_cache(maxsize=8)
    def _epoch_order(self, kind, epoch):
        generator = torch.Generator().manual_seed(derived_seed(self.seed, "epoch", kind, epoch))
        rows = self.rows_of[kind]
        return [rows[i] for i in torch.randperm(len(rows), generator=generator).tolist()]

    def _take(self, kind, use):
        count = len(self.rows_of[kind])
        positions = range(use * self.global_batch, (use + 1) * self.global_batch)
        return torch.tensor([self._epoch_order(kind, p // count)[p % count] for p in positions])

    def _advance_to(self, step):
        """Count each kind's earlier steps (replayed from 0 when jumping back, e.g. on resume)."""
        if step < self._next_step:
            self._uses, self._next_step = {k: 0 for k in KINDS}, 0
        while self._next_step < step:
            self._uses[self.kind_at(self._next_step)] += 1
            self._next_step += 1

    def rows(self, step):
        """[G] dataset indices of step `step` (cheap when steps are asked in increasing order)."""
        self._advance_to(step)
        kind = self.kind_at(step)
        return self._take(kind, self._uses[kind])

    def draws(self, step):
        kind = self.kind_at(step)
        generator = torch.Generator().manual_seed(derived_seed(self.seed, "draws", step))
        G = self.global_batch
        timesteps = torch.randint(0, self.train_timesteps, (G,), generator=generator)
        noise = torch.randn((G, *self.latent_shape), generator=generator)
        dropped = torch.rand(G, generator=generator) < self.drop.get(kind, 0.0)
        return StepDraws(kind, timesteps, noise, dropped)


def local_slice(micro, rank, batch_size, world_size):
    """The global-batch rows one process handles in one micro-batch."""
    start = (micro * world_size + rank) * batch_size
    return slice(start, start + batch_size)


class LocalBatches(torch.utils.data.Sampler):
    """DataLoader batch sampler: this process's dataset indices, micro-batch by micro-batch, from
    `start_step` on (in the order the training loop consumes them). The only user of plan.rows."""

    def __init__(self, plan, start_step, max_steps, accumulation, rank, batch_size, world_size):
        self.plan, self.start_step, self.max_steps = plan, start_step, max_steps
        self.accumulation, self.rank, self.batch_size, self.world_size = accumulation, rank, batch_size, world_size

    def __len__(self):
        return (self.max_steps - self.start_step) * self.accumulation

    def __iter__(self):
        for step in range(self.start_step, self.max_steps):
            rows = self.plan.rows(step)
            for micro in range(self.accumulation):
                yield rows[local_slice(micro, self.rank, self.batch_size, self.world_size)].tolist()
