"""Steady-state training speed: lines/s, steps/s and the share of time spent waiting for data."""
from __future__ import annotations

import time

import lightning as L


class Throughput(L.Callback):
    """Times training steps, skipping the first `warmup` steps of every epoch (worker start-up, kernel
    selection) and everything between epochs (validation, checkpoints). `data_wait` is the share of
    the time between steps spent fetching the next batch: near 1 means the loaders are the bottleneck.
    Logged per epoch (`train_lines_per_s`, `data_wait`) and summarised by `summary()`."""

    def __init__(self, warmup: int = 3):
        self.warmup = warmup
        self.steps = self.lines = 0
        self.busy = self.waiting = 0.0
        self._seen = 0
        self._ended: float | None = None
        self._started = 0.0
        self._epoch = [0, 0, 0.0, 0.0]  # steps, lines, busy, waiting of the current epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._seen, self._ended, self._epoch = 0, None, [0, 0, 0.0, 0.0]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        self._wait = now - self._ended if self._ended is not None else None
        self._started = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        self._seen += 1
        if self._seen > self.warmup and self._wait is not None:
            lines = len(batch["indices"]) if isinstance(batch, dict) and "indices" in batch else 0
            for i, value in enumerate((1, lines, now - self._started, self._wait)):
                self._epoch[i] += value
            self.steps, self.lines = self.steps + 1, self.lines + lines
            self.busy, self.waiting = self.busy + now - self._started, self.waiting + self._wait
        self._ended = now

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        steps, lines, busy, waiting = self._epoch
        if steps == 0:
            return
        total = busy + waiting
        pl_module.log_dict({"train_lines_per_s": lines / total, "data_wait": waiting / total},
                           on_step=False, on_epoch=True, rank_zero_only=True)

    def summary(self) -> dict:
        total = self.busy + self.waiting
        if not total:
            return {}
        return {"steps_per_second": round(self.steps / total, 3), "lines_per_second": round(self.lines / total, 1),
                "data_wait": round(self.waiting / total, 3), "timed_steps": self.steps}
