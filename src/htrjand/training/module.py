"""The Lightning module: CTC training, validation CER/WER, optimiser and schedule, resumable state."""
from __future__ import annotations

import math
import random

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Timer

from .. import __version__
from ..charset import Charset
from ..checkpoint import FORMAT, FORMAT_VERSION
from ..decoding import greedy_decode
from ..metrics import ErrorCounter
from ..model import HTRNet, ModelConfig
from .faults import replay_epoch_end_schedulers, settle_epoch_end
from ..model.layers import MaskedBatchNorm2d


def ctc_loss(logits: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor,
             target_lengths: torch.Tensor) -> torch.Tensor:
    """Per-sample CTC loss normalised by target length (spec 2.5); infinite ones become 0."""
    log_probs = logits.float().log_softmax(-1).transpose(0, 1)
    return F.ctc_loss(log_probs, targets, lengths, target_lengths, blank=0, reduction="none",
                      zero_infinity=True) / target_lengths.clamp_min(1)


def cosine_factor(progress: float) -> float:
    """The cosine schedule's LR multiplier: 1 at progress 0, 0.02 from progress 1 on."""
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def time_limit(trainer: L.Trainer) -> Timer | None:
    """Lightning's Timer when the run has a time limit (`train.max_time`), else None."""
    return next((c for c in trainer.callbacks if isinstance(c, Timer) and c.time_remaining() is not None), None)


def time_spent(timer: Timer) -> float:
    """Share of the wall-time limit (`train.max_time`, Lightning's Timer, kept across resumes) used so far."""
    elapsed = timer.time_elapsed()
    return elapsed / max(elapsed + timer.time_remaining(), 1e-9)


class HTRModule(L.LightningModule):
    """Wraps an `HTRNet` with its charset; everything needed to rebuild it is in the hyper-parameters."""

    def __init__(self, model: dict, charset: list[str], train: dict | None = None, data: dict | None = None,
                 preset: str = "", htrjand: dict | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.charset = Charset(charset)
        self.model_config = ModelConfig.from_dict(model)
        self.model = HTRNet(self.model_config, self.charset.num_classes)
        self.train_options = train or {}
        self.hparams.htrjand = {"format": FORMAT, "format_version": FORMAT_VERSION, "version": __version__,
                                "charset": list(charset), **(htrjand or {})}
        if self.train_options.get("freeze_cnn"):
            self.model.cnn.requires_grad_(False)
        # multi-task heads (training only: they live here, not in the HTRNet that inference and export use)
        self.aux_weight = float(self.train_options.get("aux_ctc_weight") or 0.0)
        self.aux_head = (torch.nn.Linear(self.model.project.in_features, self.charset.num_classes)
                         if self.aux_weight > 0 else None)
        self.dataset_names = list((htrjand or {}).get("training", {}).get("datasets", []))
        self._dataset_index = {name: i for i, name in enumerate(self.dataset_names)}
        self.dataset_weight = float(self.train_options.get("dataset_head_weight") or 0.0)
        self.dataset_head = (torch.nn.Linear(self.model_config.d_model, len(self.dataset_names))
                             if self.dataset_weight > 0 and len(self.dataset_names) > 1 else None)
        self.infeasible = 0
        self.unreadable = 0  # training images that failed to decode (skipped)
        self._errors = ErrorCounter()
        self._datasets: list[str] = []  # dataset name per validation sample index

    def forward(self, images: torch.Tensor, widths: torch.Tensor):
        return self.model(images, widths)

    def on_train_batch_start(self, batch, batch_idx) -> None:
        """A frozen CNN runs in eval mode: its BatchNorm statistics and dropout do not change either
        (set before every step: Lightning puts the whole module back into training mode)."""
        if self.train_options.get("freeze_cnn"):
            self.model.cnn.eval()

    # ---- training -----------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        self._limits: tuple[int, Timer | None] | None = None  # step budget and time limit of this fit
        self._time_share = (-1, 0.0)  # (global step, share of the time limit used) cache
        # DDP: BatchNorm statistics over the global batch, so that R ranks x batch B train as one
        # process with batch R*B does (docs/reliability.md)
        sync = self.trainer.world_size > 1 and self.train_options.get("sync_batchnorm", True)
        for module in self.model.modules():
            if isinstance(module, MaskedBatchNorm2d):
                module.sync = sync

    def training_step(self, batch, batch_idx):
        self.unreadable += batch["unreadable"]
        if "images" not in batch:
            return None
        columns, lengths = self.model.cnn_features(batch["images"], batch["widths"])
        features = self.model.attend(columns, lengths)
        logits = self.model.head(features)
        losses = ctc_loss(logits, lengths, batch["targets"], batch["target_lengths"])
        infeasible = int((losses == 0).sum())
        self.infeasible += infeasible
        loss = losses.mean()
        if self.aux_head is not None:
            aux = ctc_loss(self.aux_head(columns), lengths, batch["targets"], batch["target_lengths"]).mean()
            self.log("aux_ctc_loss", aux, batch_size=len(losses))
            loss = loss + self.aux_weight * aux
        if self.dataset_head is not None:
            loss = loss + self.dataset_weight * self._dataset_loss(features, lengths, batch["indices"])
        self.log("loss", loss, prog_bar=True, batch_size=len(losses))
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=len(losses))
        return loss

    def _dataset_loss(self, features: torch.Tensor, lengths: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the dataset each line comes from, predicted from its mean attention feature."""
        samples = self.trainer.datamodule.train_set.samples
        target = torch.tensor([self._dataset_index.get(samples[i].dataset, -100) for i in indices.tolist()], device=features.device)
        mask = (torch.arange(features.shape[1], device=features.device)[None, :] < lengths[:, None]).unsqueeze(-1)
        pooled = (features * mask).sum(1) / mask.sum(1).clamp_min(1)
        logits = self.dataset_head(pooled.float())
        loss = F.cross_entropy(logits, target, ignore_index=-100)
        self.log("dataset_loss", loss, batch_size=len(target))
        self.log("dataset_acc", (logits.argmax(-1) == target).float().mean(), batch_size=len(target))
        return loss

    # ---- validation ---------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._errors = ErrorCounter()

    def validation_step(self, batch, batch_idx):
        if "images" not in batch:
            return
        logits, lengths = self.model(batch["images"], batch["widths"])
        loss = ctc_loss(logits, lengths, batch["targets"], batch["target_lengths"]).mean()
        self.log("val_loss", loss, batch_size=len(lengths), sync_dist=True)
        samples = self.trainer.datamodule.val_set.samples
        for decoded, index in zip(greedy_decode(logits, lengths, self.charset), batch["indices"].tolist()):
            s = samples[index]
            self._errors.add(s.text, decoded.text, s.dataset)

    def on_validation_epoch_end(self) -> None:
        # error sums of all datasets (row 0: all of them), summed over ranks: corpus CER/WER per dataset
        names = sorted({s.dataset for s in self.trainer.datamodule.val_set.samples}) if self._trainer else []
        rows = [self._errors.total] + [self._errors.per_dataset[n] for n in names]
        sums = torch.tensor([[t.char_errors, t.chars, t.word_errors, t.words] for t in rows], dtype=torch.float64,
                            device=self.device)
        sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        cer = sums[:, 0] / sums[:, 1].clamp_min(1)
        wer = sums[:, 2] / sums[:, 3].clamp_min(1)
        self.log("val_cer", float(cer[0]), prog_bar=True, sync_dist=False, rank_zero_only=False)
        self.log("val_wer", float(wer[0]), sync_dist=False, rank_zero_only=False)
        if len(names) > 1:
            for i, name in enumerate(names, 1):
                self.log(f"val_cer/{name}", float(cer[i]), sync_dist=False, rank_zero_only=False)
                self.log(f"val_wer/{name}", float(wer[i]), sync_dist=False, rank_zero_only=False)

    # ---- optimisation -------------------------------------------------------------------------
    def configure_optimizers(self):
        opt = self.train_options
        decay, no_decay = [], []
        for name, p in self.named_parameters():  # the model and any trained extras (distillation projection)
            if not p.requires_grad:  # a frozen CNN
                continue
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": opt.get("weight_decay", 0.01)},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=opt.get("lr", 1e-3))
        warmup = max(0, opt.get("warmup_steps", 0))
        schedule = opt.get("schedule", "cosine")
        if schedule == "plateau":
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="min", factor=0.5, patience=opt.get("plateau_patience", 3))
            return {"optimizer": optimizer,
                    "lr_scheduler": {"scheduler": plateau, "monitor": "val_cer", "interval": "epoch"}}

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if schedule == "constant":
                return 1.0
            return cosine_factor(self.training_progress(step, start=warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def training_limits(self) -> tuple[int, Timer | None]:
        """This fit's step budget (0 when unknown: no epoch or step limit) and its time limit's Timer."""
        if self._limits is None:
            total = self.trainer.estimated_stepping_batches
            self._limits = (int(total) if math.isfinite(total) else 0, time_limit(self.trainer))
        return self._limits

    def training_progress(self, step: int, start: int = 0) -> float:
        """Share of training done at `step`, counted from step `start`: the steps done of the step budget
        or the share of the time limit (`train.max_time`) used, whichever is larger. The cosine LR and the
        distillation weight a(t) follow it, so that a run stopped by its time limit (a slower machine, a
        busy CPU, a wrong speed guess) ends both where a run of its full length would."""
        total, timer = self.training_limits()
        steps = (step - start) / max(1, total - start) if total else 0.0
        if timer is None:
            return steps
        if self._time_share[0] != self.global_step:  # once per step: rank 0's clock on every rank,
            spent = float(self.trainer.strategy.broadcast(time_spent(timer)))  # so DDP replicas agree
            self._time_share = (self.global_step, spent)
        return max(steps, self._time_share[1])

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        # linear warm-up for the plateau schedule (the cosine schedule has it built in)
        warmup = self.train_options.get("warmup_steps", 0)
        if self.train_options.get("schedule") == "plateau" and self.global_step < warmup:
            for group in optimizer.param_groups:
                group["lr"] = self.train_options.get("lr", 1e-3) * (self.global_step + 1) / warmup
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)

    # ---- exact resume -------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        checkpoint["rng"] = {"torch": torch.get_rng_state(), "python": random.getstate(),
                             "numpy": [kind, keys.tolist(), pos, has_gauss, gauss]}
        if torch.cuda.is_available():
            checkpoint["rng"]["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint["infeasible"] = self.infeasible
        checkpoint["unreadable"] = self.unreadable
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("val_")}
        checkpoint["metrics"] = {**metrics, "epoch": self.current_epoch, "step": self.global_step}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        rng = checkpoint.get("rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            kind, keys, pos, has_gauss, gauss = rng["numpy"]
            np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
            random.setstate(rng["python"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
        self.infeasible = checkpoint.get("infeasible", 0)
        self.unreadable = checkpoint.get("unreadable", 0)
        if self._trainer is None:
            return
        # before Lightning restores its loops from this dict: an epoch-end state as "next epoch not begun"
        settled = settle_epoch_end(checkpoint)
        self._replay_epoch_end = checkpoint.get("metrics", {}) if settled == "epoch end" else None
        datamodule = self.trainer.datamodule
        if datamodule is not None:
            loop = checkpoint.get("loops", {}).get("fit_loop", {})
            epoch = loop.get("epoch_progress", {}).get("current", {}).get("processed", checkpoint.get("epoch", 0))
            # "processed" counts the batch whose on_train_batch_end wrote the checkpoint ("completed" does not)
            batches = loop.get("epoch_loop.batch_progress", {}).get("current", {}).get("processed", 0)
            datamodule.resume_from(epoch, batches)

    def on_train_start(self) -> None:
        if getattr(self, "_replay_epoch_end", None) is not None:  # resumed at an epoch's end
            replay_epoch_end_schedulers(self.trainer, self._replay_epoch_end)
            self._replay_epoch_end = None

    def on_train_epoch_end(self) -> None:
        # Lightning skips the plateau schedule's step at the end of the epoch a run resumed in
        fit = self.trainer.fit_loop
        if fit.restarting and fit.epoch_loop.batch_progress.is_last_batch:
            replay_epoch_end_schedulers(self.trainer, self.trainer.callback_metrics)
