"""Training data: sample checks, the line dataset with augmentation, and the Lightning data module."""
from __future__ import annotations

import logging
import math
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader, Dataset

from ..augment import Augmenter
from ..charset import Charset, ctc_frames_needed
from ..datasets import Problems, Sample
from ..images import ImageError, image_width, load_line, normalize_height, pad_batch, to_ink
from .sampler import WidthBucketSampler
from ..signals import STOP_SIGNALS
from .linecache import LineCache, choose_mode, report_failures

log = logging.getLogger("htrjand")


_MASKS = hasattr(signal, "pthread_sigmask")  # POSIX


def _worker_init(worker_id: int, rank: int = 0) -> None:
    """A loader worker: seeded as Lightning seeds them (`seed_everything(workers=True)`), and deaf to
    SIGINT/SIGTERM, which a terminal's Ctrl-C or a scheduler sends to every process of a job: the main
    process finishes its step, saves and shuts the workers down (faults.StopSignals)."""
    if int(os.environ.get("PL_SEED_WORKERS", "0")):
        pl_worker_init_function(worker_id, rank)
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    if _MASKS:  # blocked since the fork (SignalSafeLoader); one sent meanwhile is now dropped
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


class SignalSafeLoader(DataLoader):
    """A DataLoader that starts its workers with SIGINT/SIGTERM blocked, so that a signal to the whole
    job cannot kill a worker before `_worker_init` makes it ignore them; the main process receives it
    as soon as the workers are started."""

    def __iter__(self):
        if not (self.num_workers and _MASKS):
            return super().__iter__()
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            return super().__iter__()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _name(s: Sample) -> str:
    return "(embedded)" if isinstance(s.image, bytes) else str(s.image)


@dataclass
class PreparedSamples:
    samples: list[Sample]
    widths: list[int]
    unknown: Counter  # unknown characters (of skipped samples) with counts
    cache: LineCache | None = None  # decoded lines, same order as `samples`

    def select(self, keep: list[int]) -> "PreparedSamples":
        return PreparedSamples([self.samples[i] for i in keep], [self.widths[i] for i in keep], self.unknown)


def cache_lines(prepared: PreparedSamples, height: int, max_width: int, mode: str, folder: Path,
                max_gb: float, workers: int, problems: Problems) -> PreparedSamples:
    """Decode every line once into a `LineCache` (mode auto/memory/disk; off returns `prepared`);
    lines that fail to decode are recorded in `problems` and dropped. Widths become exact."""
    mode = choose_mode(mode, prepared.widths, height, max_gb)
    if mode == "off" or not prepared.samples:
        return prepared
    started = time.perf_counter()
    cache, errors = LineCache.build(prepared.samples, height, max_width, mode, folder, max(1, workers))
    keep = report_failures(prepared.samples, errors, problems)
    out = prepared.select(keep)
    if len(keep) < len(prepared.samples):
        cache = LineCache(cache.buffer, cache.offsets[keep], cache.widths[keep], height)
    out.cache, out.widths = cache, [int(w) for w in cache.widths]
    log.info("line cache (%s): %d lines, %.0f MB, %.1f s", mode, len(keep), cache.nbytes / 2**20,
             time.perf_counter() - started)
    return out


def prepare_samples(samples: list[Sample], charset: Charset, height: int, stride: int,
                    max_width: int, problems: Problems, training: bool = True) -> PreparedSamples:
    """Keep samples whose image header reads and, for training, whose text the charset encodes and
    whose label fits the frames CTC gets from the image; record every skipped one in `problems`.

    Evaluation samples keep characters the charset lacks (they count as errors, as they should);
    those characters are counted and reported."""
    kept, widths, unknown = [], [], Counter()
    for s in samples:
        try:
            width = min(image_width(s.image, height, s.crop), max_width)
        except FileNotFoundError:
            problems.add("missing image", s.source, f"image {_name(s)} not found")
            continue
        except Exception as err:  # PIL raises several types for unreadable files
            problems.add("unreadable image", s.source, f"cannot read image {_name(s)}: {err}")
            continue
        missing = charset.unknown(s.text)
        unknown.update(missing)
        if missing and training:
            chars = "".join(sorted(missing))
            problems.add("unknown characters", s.source, f"characters not in the charset: {chars!r}")
            continue
        if training:
            frames = math.ceil(width / stride)
            needed = ctc_frames_needed(charset.encode(s.text))
            if needed > frames:
                problems.add("label too long", s.source,
                             f"label needs {needed} CTC frames but the image gives {frames} (CTC-infeasible)")
                continue
        kept.append(s)
        widths.append(width)
    if unknown and not training:
        log.warning("%d evaluation characters are not in the charset and will count as errors: %s",
                    sum(unknown.values()), ", ".join(f"{c!r} x{n}" for c, n in unknown.most_common()))
    return PreparedSamples(kept, widths, unknown)


class LineDataset(Dataset):
    """Line images with encoded labels; items are addressed as `(index, epoch)` so that the
    augmentation of a sample depends only on the seed, the epoch and the index (exact resume)."""

    def __init__(self, prepared: PreparedSamples, charset: Charset, height: int, max_width: int, stride: int,
                 augment: float = 0.0, seed: int = 0, stretch: float = 0.0):
        self.samples, self.widths, self.cache = prepared.samples, prepared.widths, prepared.cache
        self.charset, self.height, self.max_width, self.seed = charset, height, max_width, seed
        self.stride = stride
        augmenter = Augmenter(augment, stretch)
        self.augmenter = augmenter if augmenter.pipeline is not None else None  # both off: no augmentation

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]):
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        s = self.samples[index]
        if self.cache is not None:
            gray = self.cache[index]
        else:
            try:
                gray = normalize_height(load_line(s.image, s.crop, s.source), self.height, max_width=self.max_width)
            except ImageError as err:
                log.warning("%s: %s (skipped)", s.source, err)
                return None
        labels = self.charset.encode(s.text, skip_unknown=True)
        if self.augmenter is not None:
            self.augmenter.pipeline.set_random_seed(hash((self.seed, epoch, index)) & 0x7FFFFFFF)
            augmented = normalize_height(self.augmenter(gray), self.height, max_width=self.max_width)
            # a distortion that narrows a tight line below what CTC needs would waste the sample
            if math.ceil(augmented.shape[1] / self.stride) >= ctc_frames_needed(labels):
                gray = augmented
        return to_ink(gray), labels, index


class Collate:
    """Pads a batch; drops items whose image failed to load (counted in `unreadable`)."""

    def __init__(self, stride: int):
        self.stride = stride

    def __call__(self, items):
        kept = [it for it in items if it is not None]
        if not kept:
            return {"unreadable": len(items)}
        items, unreadable = kept, len(items) - len(kept)
        images, widths = (torch.from_numpy(a) for a in pad_batch([it[0] for it in items], self.stride))
        labels = [torch.tensor(it[1], dtype=torch.long) for it in items]
        return {"images": images, "widths": widths,
                "targets": torch.cat(labels), "target_lengths": torch.tensor([len(x) for x in labels]),
                "indices": torch.tensor([it[2] for it in items]), "unreadable": unreadable}


class EpochTaggedSampler(WidthBucketSampler):
    """Width-bucketed batches whose items carry the epoch, for `LineDataset`."""

    def __iter__(self):
        epoch = self.epoch
        for batch in super().__iter__():
            yield [(i, epoch) for i in batch]


class LineDataModule(L.LightningDataModule):
    """Training and validation loaders over prepared samples; restores its position on resume."""

    def __init__(self, train: PreparedSamples, val: PreparedSamples, charset: Charset, height: int,
                 stride: int, batch_size: int, max_batch_pixels: int, workers: int, augment: float,
                 max_width: int, seed: int, groups: list[int] | None = None, shares: list[float] | None = None,
                 curriculum: tuple[int, float] | None = None, shares_end: list[float] | None = None,
                 epochs: int = 1, stretch: float = 0.0):
        super().__init__()
        self.train_set = LineDataset(train, charset, height, max_width, stride, augment, seed, stretch)
        self.val_set = LineDataset(val, charset, height, max_width, stride, 0.0, seed)
        self.collate = Collate(stride)
        self.batch_size, self.max_batch_pixels, self.height = batch_size, max_batch_pixels or None, height
        self.workers, self.seed = workers, seed
        self.resume_epoch, self.resume_batches = 0, 0
        self.groups, self.shares = groups, shares  # weighted multi-dataset sampling (training only)
        self.curriculum = curriculum  # (epochs, start share): short lines first (training only)
        self.shares_end, self.epochs = shares_end, epochs  # shares moving linearly over the epochs

    def resume_from(self, epoch: int, completed_batches: int) -> None:
        """Continue training epoch `epoch` after its first `completed_batches` (set from a checkpoint
        whose loop state `faults.settle_epoch_end` has settled: an epoch-end checkpoint gives the next
        epoch and 0 batches)."""
        self.resume_epoch, self.resume_batches = epoch, completed_batches

    def _loader(self, dataset: LineDataset, shuffle: bool) -> DataLoader:
        rank = self.trainer.global_rank if self.trainer else 0
        world = self.trainer.world_size if self.trainer else 1
        weighted = shuffle and self.shares is not None
        sampler = EpochTaggedSampler(dataset.widths, self.batch_size, self.max_batch_pixels, self.height,
                                     shuffle=shuffle, seed=self.seed, rank=rank, num_replicas=world,
                                     groups=self.groups if weighted else None,
                                     shares=self.shares if weighted else None,
                                     difficulty=[len(s.text) for s in dataset.samples] if shuffle else None,
                                     curriculum=self.curriculum if shuffle else None,
                                     shares_end=self.shares_end if weighted else None, epochs=self.epochs)
        if shuffle:
            sampler.epoch, sampler.skip_batches = self.resume_epoch, self.resume_batches
            self.resume_batches = 0
        return SignalSafeLoader(dataset, batch_sampler=sampler, num_workers=self.workers, collate_fn=self.collate,
                                generator=torch.Generator().manual_seed(self.seed), persistent_workers=False,
                                pin_memory=torch.cuda.is_available(),
                                worker_init_fn=partial(_worker_init, rank=rank) if self.workers else None)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

