"""`train()`: from a Config to a trained, checkpointed model with a summary."""
from __future__ import annotations

import json
import logging
import os
import time
import warnings
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ..charset import Charset
from ..checkpoint import (CheckpointError, atomic_save, check_digest, digest_path, previous_path,
                          read_checkpoint)
from ..config import Config, ConfigError, duration_seconds, resolve_precision
from ..charmap import CharMapping, MappingError
from ..datasets import DatasetSpec, Problems, Sample, read_dataset, read_datasets, spec_of
from ..model import ModelConfig, count_parameters
from .data import LineDataModule, LineDataset, cache_lines, prepare_samples
from .distill import Distillation
from .faults import NumericalGuard, StopSignals
from .finetune import Init
from .module import HTRModule
from .prune import probe_batches
from .throughput import Throughput

log = logging.getLogger("htrjand")


def _devices(value: str):
    if value == "auto":
        return "auto"
    if value.startswith("["):
        return json.loads(value)
    return int(value) if value.lstrip("-").isdigit() else value


def _max_time(value: str) -> timedelta | None:
    """The time limit as Lightning takes it."""
    seconds = duration_seconds(value, "train.max_time")
    return timedelta(seconds=seconds) if seconds else None


def _resume_path(cfg: Config) -> str | None:
    """The checkpoint `--resume` names (for 'auto': OUTPUT/last.ckpt, else last.prev.ckpt), unread."""
    if not cfg.train.resume:
        return None
    if cfg.train.resume == "auto":
        last = Path(cfg.train.output) / "last.ckpt"
        found = [p for p in (last, previous_path(last)) if p.is_file()]
        return str(found[0]) if found else None
    return cfg.train.resume


def open_resume(cfg: Config) -> tuple[str | None, dict | None]:
    """The checkpoint to resume from, read and checked against its digest.

    An explicit path must be good (the error names it and offers last.prev.ckpt when that one is).
    'auto' takes OUTPUT/last.ckpt; when that one is missing or fails its check it falls back to
    OUTPUT/last.prev.ckpt with a warning, and moves the bad file aside to last.ckpt.corrupt so that
    the next save keeps the good previous one. No checkpoint at all starts a fresh run."""
    if not cfg.train.resume:
        return None, None
    if cfg.train.resume != "auto":
        return cfg.train.resume, read_checkpoint(cfg.train.resume)
    last = Path(cfg.train.output) / "last.ckpt"
    errors = []
    for path in (last, previous_path(last)):
        if not path.is_file():
            continue
        try:
            ckpt = read_checkpoint(path)
        except CheckpointError as err:
            errors.append(str(err))
            continue
        if errors:
            log.warning("%s\nresuming from the previous checkpoint %s (step %s) instead; the bad one is kept "
                        "as %s", errors[0].split("; the previous")[0], path, ckpt.get("global_step"),
                        last.name + ".corrupt")
            for bad in (last, digest_path(last)):
                try:
                    os.replace(bad, bad.with_name(bad.name.replace("last.ckpt", "last.ckpt.corrupt")))
                except FileNotFoundError:  # another DDP rank moved it already
                    pass
        elif check_digest(path) is None:
            log.warning("%s has no sha256 digest (written by an older htrjand, or a crash came between the "
                        "checkpoint and its digest): resuming from it unverified", path)
        return str(path), ckpt
    if errors:
        raise CheckpointError("no usable checkpoint to resume from: " + "; ".join(errors))
    return None, None


def _remove_temporaries(out: Path) -> None:
    """Delete `.NAME.*.tmp` files a killed run left half-written (never read: names start with '.')."""
    if os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0":
        return  # DDP ranks started by rank 0 find the folder as rank 0 left it
    for tmp in out.glob(".*.tmp"):
        log.info("removing %s, left by an interrupted run", tmp)
        tmp.unlink(missing_ok=True)


def _load_mapping(value: str) -> CharMapping:
    try:
        return CharMapping.load(value)
    except MappingError as err:
        raise ConfigError(str(err)) from None


def standardize(samples: list[Sample], mapping: CharMapping, problems: Problems) -> list[Sample]:
    """Samples with the character mapping applied to their text; lines it empties are skipped."""
    kept = []
    for s in samples:
        text = mapping.apply(s.text, s.dataset)
        if text:
            kept.append(s if text == s.text else replace(s, text=text))
        else:
            problems.add("empty transcription", s.source, "transcription is empty after character mapping")
    return kept


def _share_table(specs: list[DatasetSpec], shares: list[float] | None) -> dict[str, float] | None:
    if shares is None:
        return None
    total = sum(shares)
    return {str(spec): round(share / total, 4) for spec, share in zip(specs, shares)}


def train(cfg: Config) -> dict:
    """Train a model as `cfg` says; returns (and writes to OUTPUT/summary.json) the run summary."""
    if not cfg.data.train:
        raise ConfigError("no training data: give --train MANIFEST_OR_FOLDER (or data.train in the config)")
    if not cfg.data.val:
        raise ConfigError("no validation data: give --val MANIFEST_OR_FOLDER (or data.val in the config)")
    for name in ("augment", "stretch"):
        if not getattr(cfg.data, name) >= 0:
            raise ConfigError(f"data.{name} must be 0 (off) or positive, got {getattr(cfg.data, name)}")
    out = Path(cfg.train.output)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)

    _remove_temporaries(out)
    resume, ckpt = open_resume(cfg)
    mapping = (CharMapping.from_dict(ckpt["hyper_parameters"]["htrjand"].get("charset_mapping")) if ckpt
               else _load_mapping(cfg.data.charset_mapping))

    problems = Problems()
    train_specs = [spec_of(v) for v in cfg.data.train]
    val_specs = [spec_of(v) for v in cfg.data.val]
    test_specs = [spec_of(v) for v in cfg.data.test]
    origin: dict[int, int] = {}  # id(sample) -> index of its training spec, for weighted sampling
    train_samples = []
    for i, spec in enumerate(train_specs):
        part = standardize(read_dataset(spec, problems), mapping, problems)
        origin.update((id(s), i) for s in part)
        train_samples += part
    raw_val = read_datasets(val_specs, problems)
    val_samples = standardize(raw_val, mapping, problems)
    if not train_samples:
        raise ConfigError(f"no usable training lines in {', '.join(map(str, train_specs))}")

    if ckpt:
        stored = ckpt["hyper_parameters"]
        charset = Charset(stored["charset"])
        cfg.preset = stored.get("preset") or cfg.preset
        try:
            cfg.model = ModelConfig.from_dict(stored["model"])
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{resume}: stored model config is not usable ({err})") from None
        log.info("resuming from %s (epoch %s, step %s)", resume, ckpt.get("epoch"), ckpt.get("global_step"))
    else:
        charset = Charset.from_texts(s.text for s in train_samples)
    init = Init.load(cfg.train.init, cfg.train.charset_mode, charset) if cfg.train.init and not ckpt else None
    if init:  # fine-tuning: the checkpoint's architecture (with the options given), its charset kept/extended/replaced
        charset, cfg.preset = init.charset, init.preset or cfg.preset
        cfg.model = init.architecture({k: getattr(cfg.model, k) for k in cfg.model_given})
    kd = Distillation.setup(cfg, charset, ckpt, resume)  # None unless distilling (docs/distillation.md)
    if kd and (cfg.train.aux_ctc_weight or cfg.train.dataset_head_weight):
        raise ConfigError("the multi-task heads (aux_ctc_weight, dataset_head_weight) are for `train`; "
                          "`distill` does not use them: set them to 0")
    if kd:
        charset = kd.charset
        for spec, part in kd.unlabelled(problems):  # KD-only datasets: their own sampling group
            origin.update((id(s), len(train_specs)) for s in part)
            train_specs.append(spec)
            train_samples += part

    stride = cfg.model.width_stride
    train_set = prepare_samples(train_samples, charset, cfg.model.height, stride, cfg.data.max_width, problems)
    val_set = prepare_samples(val_samples, charset, cfg.model.height, stride, cfg.data.max_width, problems,
                              training=False)
    cache_args = (cfg.model.height, cfg.data.max_width, cfg.data.cache,
                  Path(cfg.data.cache_dir) if cfg.data.cache_dir else out / "cache",
                  cfg.data.cache_max_gb, cfg.data.workers, problems)
    train_set = cache_lines(train_set, *cache_args)
    val_set = cache_lines(val_set, *cache_args)
    if not train_set.samples:
        raise ConfigError(f"every training line was skipped: {problems.summary()}")
    if not val_set.samples:
        raise ConfigError(f"every validation line was skipped: {problems.summary()}")

    weights = [spec.weight for spec in train_specs]
    shares = [w if w is not None else 1.0 for w in weights] if any(w is not None for w in weights) else None
    groups = [origin[id(s)] for s in train_set.samples] if shares else None
    ends = [getattr(spec, "weight_end", None) for spec in train_specs]
    shares_end = [e if e is not None else w for e, w in zip(ends, shares)] if shares and any(ends) else None
    info = {"train_data": [str(v) for v in train_specs], "val_data": [str(v) for v in val_specs],
            "train_lines": len(train_set.samples), "val_lines": len(val_set.samples),
            "skipped": dict(problems.counts()), "datasets": sorted({s.dataset for s in train_set.samples}),
            "sampling_shares": _share_table(train_specs, shares),
            **({"sampling_shares_end": _share_table(train_specs, shares_end)} if shares_end else {})}
    make_module = kd.module_for(train_set) if kd else HTRModule
    module = make_module(cfg.model.to_dict(), charset.to_list(), train=vars(cfg.train).copy(),
                         data=vars(cfg.data).copy(), preset=cfg.preset,
                         htrjand={"training": info, "charset_mapping": mapping.to_dict(),
                                  **({"init": init.record()} if init else {})})
    if init:  # narrowed channels are chosen on up to 512 (unaugmented) training lines
        init.apply(module.model, probe_batches(LineDataset(train_set, charset, cfg.model.height, cfg.data.max_width,
                                                           stride), seed=cfg.train.seed))
    data = LineDataModule(train_set, val_set, charset, cfg.model.height, stride, cfg.data.batch_size,
                          cfg.data.max_batch_pixels, cfg.data.workers, cfg.data.augment, cfg.data.max_width,
                          cfg.train.seed, groups, shares, (cfg.data.curriculum_epochs, cfg.data.curriculum_start),
                          shares_end, cfg.train.epochs, cfg.data.stretch)
    if kd:
        kd.check_outputs(data)  # a Teacher that gives NaN is refused before training

    best = ModelCheckpoint(dirpath=out, filename="best", monitor="val_cer", mode="min", save_top_k=1,
                           auto_insert_metric_name=False, enable_version_counter=False)
    guard, speed = NumericalGuard(cfg.train.max_bad_steps), Throughput()
    callbacks = [best, _LastCheckpoint(out / "last.ckpt", cfg.train.checkpoint_every), guard, speed,
                 EarlyStopping(monitor="val_cer", mode="min", patience=cfg.train.patience,
                               stopping_threshold=cfg.train.stop_cer or None, check_on_train_epoch_end=False)]
    if cfg.train.progress:
        callbacks.append(TQDMProgressBar(refresh_rate=10))
    val_every = cfg.train.val_every
    trainer = L.Trainer(
        default_root_dir=out, max_epochs=cfg.train.epochs, max_steps=cfg.train.max_steps,
        max_time=_max_time(cfg.train.max_time),
        accelerator=cfg.train.accelerator, devices=_devices(cfg.train.devices), strategy=cfg.train.strategy,
        num_nodes=cfg.train.num_nodes, precision=resolve_precision(cfg.train.precision, cfg.train.accelerator),
        gradient_clip_val=cfg.train.grad_clip or None, deterministic=cfg.train.deterministic or None,
        callbacks=callbacks, plugins=[AtomicCheckpointIO(keep_previous=[out / "last.ckpt"],
                                                         preloaded={resume: ckpt} if resume else None)],
        logger=[CSVLogger(out, name="logs"), TensorBoardLogger(out, name="tensorboard")],  # new version per (re)start
        check_val_every_n_epoch=int(val_every) if val_every >= 1 else 1,
        val_check_interval=val_every if val_every < 1 else None,
        enable_progress_bar=cfg.train.progress, enable_model_summary=False, use_distributed_sampler=False,
        num_sanity_val_steps=0, log_every_n_steps=10,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*resuming from a checkpoint that ended before the epoch ended.*")
        trainer.fit(module, datamodule=data, ckpt_path=resume)

    summary = {
        "output": str(out), "preset": cfg.preset, "parameters": count_parameters(module.model),
        "charset_size": len(charset), "best_checkpoint": str(out / "best.ckpt"),
        "best_val_cer": float(best.best_model_score) if best.best_model_score is not None else None,
        "epochs": trainer.current_epoch, "steps": trainer.global_step,
        "infeasible_ctc_samples": module.infeasible, "unreadable_training_images": module.unreadable,
        "bad_steps": guard.bad_steps, "resumed_from": resume, "skipped": dict(problems.counts()),
        "train_lines": len(train_set.samples), "val_lines": len(val_set.samples),
        "unknown_characters": {"train": dict(train_set.unknown), "val": dict(val_set.unknown)},
        "seconds": round(time.time() - started, 1), "throughput": speed.summary(),
    }
    if kd:
        summary["distillation"] = kd.summary()
    if trainer.is_global_zero and (out / "best.ckpt").is_file():
        summary["report"] = final_report(out / "best.ckpt", raw_val, test_specs, out, cfg.data.batch_size)
    if trainer.is_global_zero:
        tmp = out / ".summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, out / "summary.json")
    return summary


def final_report(checkpoint: Path, val: list[Sample], test_specs: list[DatasetSpec], out: Path,
                 batch_size: int) -> dict:
    """The best checkpoint evaluated on validation (and test) data, a row per dataset, written to
    OUTPUT/report.json and OUTPUT/report.md."""
    from ..evaluation import evaluate, format_report
    from ..recognition import load

    recognizer = load(checkpoint)
    parts = {"val": val}
    if test_specs:
        parts["test"] = read_datasets(test_specs, Problems())
    report, markdown = {}, [f"# Report of {checkpoint}", ""]
    for name, samples in parts.items():
        result = evaluate(recognizer, samples, batch_size=batch_size)
        report[name] = {"overall": result["overall"], "datasets": result["datasets"],
                        "lines_per_second": result["lines_per_second"]}
        markdown += [f"## {name}", "", "| dataset | lines | chars | CER % | WER % |", "|---|---|---|---|---|"]
        rows = list(result["datasets"].items()) + [("all", result["overall"])]
        markdown += [f"| {n} | {t['lines']} | {t['chars']} | {100 * t['cer']:.2f} | {100 * t['wer']:.2f} |"
                     for n, t in rows] + [""]
        log.info("%s:\n%s", name, format_report(result))
    for suffix, text in (("json", json.dumps(report, indent=2, ensure_ascii=False)), ("md", "\n".join(markdown))):
        tmp = out / f".report.{suffix}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out / f"report.{suffix}")
    return report


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that never leaves a half-written file behind: every checkpoint gets a
    sha256 digest, and the files in `keep_previous` keep the version they replace (last.prev.ckpt).
    `preloaded` maps a path to the checkpoint already read and verified from it (read once)."""

    def __init__(self, keep_previous=(), preloaded: dict | None = None):
        super().__init__()
        self.keep_previous = {Path(p).resolve() for p in keep_previous}
        self.preloaded = {str(Path(k).resolve()): v for k, v in (preloaded or {}).items()}

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        atomic_save(checkpoint, path, digest=True, keep_previous=Path(path).resolve() in self.keep_previous)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        ckpt = self.preloaded.pop(str(Path(path).resolve()), None)
        return ckpt if ckpt is not None else read_checkpoint(path)

    def remove_checkpoint(self, path) -> None:
        super().remove_checkpoint(path)
        digest_path(path).unlink(missing_ok=True)


class _LastCheckpoint(L.Callback):
    """Writes OUTPUT/last.ckpt every N steps, at every epoch end and where training stops (a time
    limit part-way through an epoch included), for `--resume`. On SIGTERM or a first Ctrl-C it writes
    it at the end of the current step (after the epoch's validation, at an epoch's last step) and
    stops the run with `StopRequested`."""

    def __init__(self, path: Path, every: int):
        self.path, self.every = path, max(1, every)
        self.saved_step = -1
        self.signals = StopSignals()

    def _save(self, trainer) -> None:
        if trainer.global_step != self.saved_step:
            trainer.save_checkpoint(self.path)
            self.saved_step = trainer.global_step

    def on_train_start(self, trainer, pl_module) -> None:
        self.saved_step = trainer.global_step  # a resumed run's checkpoint already holds this step
        self.signals.install()  # after Lightning's handlers, which it registers just before

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        stop = self.signals.requested(trainer)
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return  # the epoch-end checkpoint follows, with the epoch's validation in it
        if stop or trainer.global_step % self.every == 0 or trainer.global_step == trainer.max_steps:
            self._save(trainer)
        if stop:
            raise self.signals.stopped(trainer.global_step, self.path)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # only a finished epoch: a run stopped part-way (max_steps, max_time) is saved by on_train_end
        if trainer.fit_loop.epoch_loop.batch_progress.current.completed >= trainer.num_training_batches:
            self._save(trainer)
            if self.signals.requested(trainer):
                raise self.signals.stopped(trainer.global_step, self.path)

    def on_train_end(self, trainer, pl_module) -> None:
        self.signals.restore()
        self._save(trainer)

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.signals.restore()
        if isinstance(exception, KeyboardInterrupt) and self.path.is_file():  # a second Ctrl-C
            log.warning("interrupted at step %d: %s holds step %d, its last save; the same command with --resume "
                        "auto continues from there", trainer.global_step, self.path, self.saved_step)
