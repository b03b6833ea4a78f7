"""Width-bucketed batch sampling for training and evaluation (weighted across datasets, DDP-aware)."""
from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence

import torch


class WidthBucketSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of similar widths, so padding stays low.

    Samples are sorted by width (with a little seeded jitter so batches differ between epochs),
    cut into batches of at most `batch_size` lines and `max_pixels` padded pixels, and the batch
    order is shuffled. With `groups` (a dataset index per sample) and `shares` (per dataset), each
    epoch draws the datasets' lines in proportion to the shares instead of taking every line once.

    DDP (`num_replicas` ranks): training cuts *global* batches of `batch_size * num_replicas` lines
    (and `max_pixels` per rank's share), shuffles them exactly as one process would, and gives rank r
    the lines r, r + R, ... of each global batch. So every rank has the same number of batches, the
    ranks' lines within an epoch are disjoint, and R ranks x batch B train on the same global batches,
    in the same order, as one process with batch R*B. A global batch of fewer than R lines (a short
    last one) repeats its lines so that no rank gets an empty batch. Evaluation lines are split
    between ranks (every R-th line) before batching. `skip_batches` resumes an epoch part-way through.

    Curriculum (`difficulty` per sample, e.g. label length, and `curriculum=(epochs, start)`): in
    epoch e < epochs only the easiest c(e) share of the lines is drawn, c(e) = sqrt(start^2 +
    (1 - start^2) e / epochs) (competence-based curriculum, Platanios et al. 2019), repeated to fill
    the epoch so that every epoch has the same number of batches (and the LR schedule its length).
    With `shares_end`, the datasets' shares move linearly from `shares` to `shares_end` over `epochs`
    (e.g. a synthetic set whose share decays), the epoch length staying the same.
    """

    def __init__(self, widths: Sequence[int], batch_size: int, max_pixels: int | None = None,
                 height: int = 64, shuffle: bool = True, seed: int = 0, rank: int = 0, num_replicas: int = 1,
                 groups: Sequence[int] | None = None, shares: Sequence[float] | None = None,
                 difficulty: Sequence[float] | None = None, curriculum: tuple[int, float] | None = None,
                 shares_end: Sequence[float] | None = None, epochs: int = 1):
        self.widths, self.batch_size, self.max_pixels = list(widths), batch_size, max_pixels
        self.curriculum = curriculum if curriculum and curriculum[0] > 0 and difficulty is not None else None
        if self.curriculum:  # each sample's rank by difficulty, as a share of all samples (0 = easiest)
            ranked = sorted(range(len(difficulty)), key=lambda i: difficulty[i])
            self.percentile = [0.0] * len(ranked)
            for r, i in enumerate(ranked):
                self.percentile[i] = (r + 1) / len(ranked)
        self.height, self.shuffle, self.seed = height, shuffle, seed
        self.rank, self.num_replicas = rank, num_replicas
        self.epoch, self.skip_batches = 0, 0
        # Lightning advances the epoch of `loader.sampler` and `loader.batch_sampler.sampler`, not of
        # the batch sampler itself: pointing `sampler` at ourselves makes it call our `set_epoch`.
        self.sampler = self
        self.members: list[list[int]] = []
        self.shares = list(shares) if shares is not None else None
        # shares move linearly from `shares` (epoch 0) to `shares_end` (epoch `epochs` - 1)
        self.shares_end = list(shares_end) if shares_end is not None and shares is not None else None
        self.epochs = max(1, epochs)
        if self.shares is not None:
            if groups is None or len(groups) != len(self.widths):
                raise ValueError("weighted sampling needs a group index per sample")
            self.members = [[] for _ in self.shares]
            for i, g in enumerate(groups):
                self.members[g].append(i)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def shares_at(self, epoch: int) -> list[float]:
        """The datasets' shares in `epoch` (constant unless `shares_end` is given)."""
        if self.shares_end is None:
            return self.shares
        progress = min(1.0, epoch / max(1, self.epochs - 1))
        return [a + (b - a) * progress for a, b in zip(self.shares, self.shares_end)]

    def competence(self, epoch: int) -> float:
        """Share of the lines (easiest first) the curriculum admits in `epoch` (1 = all)."""
        if not self.curriculum or epoch >= self.curriculum[0]:
            return 1.0
        epochs, start = self.curriculum
        return min(1.0, math.sqrt(start ** 2 + (1 - start ** 2) * epoch / epochs))

    def _draw(self, rng: random.Random) -> list[int]:
        picked = self._draw_all(rng)
        c = self.competence(self.epoch)
        if c >= 1.0:
            return picked
        admitted = [i for i in picked if self.percentile[i] <= c] or picked
        filled: list[int] = []
        while len(filled) < len(picked):
            rng.shuffle(admitted)
            filled += admitted[: len(picked) - len(filled)]
        return filled

    def _draw_all(self, rng: random.Random) -> list[int]:
        """This epoch's lines: all of them, or with `shares` as many from each group as its share of
        the total (a group's lines in a fresh shuffled order, repeated when its share needs more)."""
        if self.shares is None:
            return list(range(len(self.widths)))
        total, picked = len(self.widths), []
        shares = self.shares_at(self.epoch)
        norm = sum(s for s, m in zip(shares, self.members) if m)
        for share, members in zip(shares, self.members):
            count = round(total * share / norm) if members else 0
            while count > 0:
                perm = members[:]
                rng.shuffle(perm)
                picked += perm[:count]
                count -= len(perm)
        return picked

    def _batches(self) -> list[list[int]]:
        rng = random.Random(self.seed + 7919 * self.epoch)
        jitter = (lambda: rng.uniform(0.9, 1.1)) if self.shuffle else (lambda: 1.0)
        order = sorted(self._draw(rng), key=lambda i: self.widths[i] * jitter())
        replicas = self.num_replicas if self.shuffle else 1  # training: global batches shared by the ranks
        if not self.shuffle and self.num_replicas > 1:  # evaluation: every rank gets a share of the lines
            order = order[self.rank:: self.num_replicas]
        batches: list[list[int]] = []
        current: list[int] = []
        widest = 0
        for i in order:
            wider = max(widest, self.widths[i])
            share = math.ceil((len(current) + 1) / replicas)  # lines of the widest rank's part
            too_big = self.max_pixels and wider * self.height * share > self.max_pixels
            if current and (len(current) == self.batch_size * replicas or too_big):
                batches.append(current)
                current, wider = [], self.widths[i]
            current.append(i)
            widest = wider
        if current:
            batches.append(current)
        if self.shuffle:
            rng.shuffle(batches)
        if replicas > 1:
            batches = [(b * replicas)[: max(len(b), replicas)][self.rank:: replicas] for b in batches]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches()
        skip, self.skip_batches = self.skip_batches, 0
        yield from batches[skip:]

    def __len__(self) -> int:
        return len(self._batches())
