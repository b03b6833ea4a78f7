"""Surviving faults in training: resume state at an epoch's end, stop signals, and non-finite
losses or gradients.

`settle_epoch_end` rewrites the loop state of a checkpoint written at an epoch's end so that
Lightning resumes it exactly; `StopSignals` turns SIGTERM or a first Ctrl-C into a stop after the
current training step with the run's state saved; `NumericalGuard` skips optimiser steps whose loss
or gradients are not finite and stops a run that keeps producing them (docs/reliability.md).
"""
from __future__ import annotations

import logging
import signal

import lightning as L
import torch

from .. import signals
from ..signals import Stopped

log = logging.getLogger("htrjand")


# ---- exact resume at an epoch's end ---------------------------------------------------------------
def _zero_current(state) -> None:
    """Zero every `current` progress counter (what Lightning does when a new epoch starts)."""
    if isinstance(state, dict):
        for key, value in state.items():
            if key == "current" and isinstance(value, dict):
                for counter in value:
                    value[counter] = 0
            else:
                _zero_current(value)


def settle_epoch_end(checkpoint: dict) -> str | None:
    """Turn the loop state of a checkpoint written at an epoch's end into "epoch N done, epoch N+1
    not begun", in place. Returns "epoch end" (written in `on_train_epoch_end`), "last batch"
    (written in `on_train_batch_end` of an epoch's last batch) or None (left alone).

    Lightning saves from `on_train_epoch_end` with the epoch counted as processed but not yet
    completed. With `max_steps` set, Lightning always treats a resumed run as restarting and
    classifies that state as "restarted on epoch end": it finishes the epoch a second time, runs the
    epoch-end hooks again and advances `epoch_progress.processed` twice. Samplers get their epoch
    from that counter, so every later epoch was shuffled and augmented as the next one, and
    `max_epochs` ended training an epoch early. A fresh epoch after a finished one is the state
    Lightning resumes exactly, with or without `max_steps`. (A checkpoint from the last batch, before
    the epoch's end hooks, is settled the same way; its validation is not repeated.)
    """
    fit = checkpoint.get("loops", {}).get("fit_loop")
    if not fit or "epoch_progress" not in fit or "epoch_loop.batch_progress" not in fit:
        return None
    epochs, batches = fit["epoch_progress"], fit["epoch_loop.batch_progress"]
    now, done = epochs["current"], batches["current"]
    if now["processed"] == now["completed"] + 1:
        kind = "epoch end"
    elif (batches.get("is_last_batch") and now["ready"] == now["processed"] + 1 == now["completed"] + 1
          and done["processed"] == done["completed"] + 1):
        kind = "last batch"
        batches["total"]["completed"] = batches["total"]["processed"]  # the batch did finish
        # saved before the batch loop counted this batch as stepped (Lightning adds it on restart)
        stepped = fit.get("epoch_loop.state_dict", {})
        if "_batches_that_stepped" in stepped:
            stepped["_batches_that_stepped"] += 1
    else:
        return None
    for part in (epochs["current"], epochs["total"]):
        finished = part["completed"] + 1
        for counter in ("ready", "started", "processed", "completed"):
            part[counter] = finished
    for key, value in fit.items():
        if key.startswith("epoch_loop.") and not key.startswith("epoch_loop.val_loop."):
            _zero_current(value)
    batches["is_last_batch"] = False
    val = fit.get("epoch_loop.val_loop.batch_progress")
    if val:  # Lightning resets the validation batch count at every epoch start
        for part in ("total", "current"):
            for counter in val[part]:
                val[part][counter] = 0
        val["is_last_batch"] = False
    return kind


def replay_epoch_end_schedulers(trainer: L.Trainer, metrics: dict) -> None:
    """Step the epoch-interval plateau schedulers as the end of the epoch a checkpoint was written at
    would have (after `on_train_epoch_end`, so after the checkpoint), with the metrics it stored."""
    for config in trainer.lr_scheduler_configs:
        if config.interval == "epoch" and config.reduce_on_plateau and config.monitor in metrics:
            config.scheduler.step(metrics[config.monitor])


# ---- stop signals (htrjand.signals) ------------------------------------------------------------
class StopRequested(Stopped):
    """Training stopped on a signal after saving its state (`exit_code` = 128 + the signal number)."""

    def __init__(self, signum: int, step: int, checkpoint=None, resume: str | None = "--resume auto"):
        hint = f": {checkpoint} holds the run; the same command with {resume} continues it" if resume else ""
        super().__init__(signum, f"at step {step}{hint}")
        self.step = step


class StopSignals(signals.StopSignals):
    """SIGTERM (`kill`, a scheduler's preemption) or a first Ctrl-C asks the run to stop once the current
    training step is done and saved, instead of dying mid-step: `requested(trainer)` says so at a step's
    end (every process of a multi-process run agrees on the same step). A second signal stops at once.
    The handlers are installed when training starts, after Lightning's own, and put back when it ends."""

    def __init__(self):
        super().__init__("the current training step is done and saved")

    def requested(self, trainer: L.Trainer) -> bool:
        """Whether to stop after this step (`received`, agreed by all processes of a Lightning run)."""
        asked = self.received is not None
        if trainer.world_size > 1:  # every process stops after the same step
            asked = trainer.strategy.reduce_boolean_decision(asked, all=False)
            if asked and self.received is None:
                self.received = signal.SIGTERM
        return asked

    def stopped(self, step: int, checkpoint, resume: str = "--resume auto") -> StopRequested:
        return StopRequested(self.received or signal.SIGTERM, step, checkpoint, resume)


# ---- numerical faults ---------------------------------------------------------------------------
class NumericalFault(RuntimeError):
    """Training produced non-finite losses or gradients too many steps in a row."""


class NumericalGuard(L.Callback):
    """Skips optimiser steps whose loss or gradients are NaN/inf and stops after `max_bad` in a row.

    A bad step leaves the weights, the optimiser state and the BatchNorm running statistics as they
    were before the batch (the statistics are restored from a copy taken at batch start), logs a
    warning naming the batch's files, and counts in `bad_steps` (logged, kept in checkpoints, and
    reported in summary.json). The optimiser step is skipped by clearing the gradients in
    `on_before_optimizer_step` (after backward, before clipping and `optimizer.step`): AdamW leaves a
    parameter without gradient untouched, and a mixed-precision GradScaler has by then recorded the
    infinite gradients, so it skips the step too. The global step still advances (schedules count
    batches). `max_bad = 0` disables the stop.
    """

    def __init__(self, max_bad: int = 20):
        self.max_bad = max_bad
        self.bad_steps, self.consecutive = 0, 0
        self._loss: torch.Tensor | None = None
        self._indices: list[int] = []
        self._buffers: list[tuple[torch.Tensor, torch.Tensor]] = []

    def state_dict(self) -> dict:
        return {"bad_steps": self.bad_steps, "consecutive": self.consecutive}

    def load_state_dict(self, state: dict) -> None:
        self.bad_steps, self.consecutive = state.get("bad_steps", 0), state.get("consecutive", 0)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._loss = None
        self._indices = batch["indices"].tolist() if isinstance(batch, dict) and "indices" in batch else []
        # the persistent buffers (BatchNorm statistics) as they were before this batch's forward pass
        self._buffers = [(b, b.detach().clone()) for m in pl_module.modules() for name, b in m._buffers.items()
                         if b is not None and name not in m._non_persistent_buffers_set]

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        self._loss = loss.detach()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if self._loss is None and not grads:
            return  # nothing was computed (a batch of unreadable images): not a numerical fault
        checks = [torch.isfinite(self._loss).all()] if self._loss is not None else []
        if grads:
            checks.append(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all())
        if bool(torch.stack(checks).all()):
            self.consecutive = 0
            return
        what = ("loss" if self._loss is not None and not bool(torch.isfinite(self._loss).all())
                else "gradient")
        for p in (p for group in optimizer.param_groups for p in group["params"]):
            p.grad = None
        with torch.no_grad():
            for buffer, saved in self._buffers:
                buffer.copy_(saved)
        self.bad_steps += 1
        self.consecutive += 1
        files = self.batch_files(trainer)
        log.warning("step %d: non-finite %s, optimiser step skipped (%d bad steps, %d in a row); batch: %s",
                    trainer.global_step, what, self.bad_steps, self.consecutive, _shorten(files))
        if self.max_bad and self.consecutive >= self.max_bad:
            raise NumericalFault(
                f"training stopped: {self.consecutive} consecutive steps had a non-finite (NaN/inf) loss or "
                f"gradient (train.max_bad_steps = {self.max_bad}); the last bad batch (step {trainer.global_step}) "
                f"holds these lines: {'; '.join(files) or '(unknown)'}. Check these images and transcriptions, "
                f"lower the learning rate, or resume from the last checkpoint")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._buffers, self._loss = [], None
        pl_module.log("bad_steps", float(self.bad_steps), batch_size=1)

    def batch_files(self, trainer) -> list[str]:
        """The current batch's lines as 'image (source)' for messages."""
        dataset = getattr(trainer.datamodule, "train_set", None) if trainer.datamodule is not None else None
        samples = getattr(dataset, "samples", None)
        if not samples:
            return [f"sample {i}" for i in self._indices]
        names = []
        for i in self._indices:
            s = samples[i]
            image = "(embedded image)" if isinstance(s.image, bytes) else str(s.image)
            names.append(f"{image} ({s.source})" if s.source and s.source != image else image)
        return names


def _shorten(files: list[str], most: int = 3) -> str:
    shown = ", ".join(files[:most])
    return shown + (f" and {len(files) - most} more" if len(files) > most else "") if files else "(unknown)"
