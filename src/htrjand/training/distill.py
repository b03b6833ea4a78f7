"""Knowledge distillation (spec 2.5): a Student learns from a frozen Teacher.

Read top to bottom: the losses (`kd_loss`, `feature_loss`) and the curriculum weight `alpha_at`;
the Teacher (`load_teacher`, `check_alignment`, `teacher_columns`); `Distillation`, what `train()`
uses to set a run up and check it before training; and `DistillModule`, whose training step is

    L = a(t) CTC(student, y) + (1 - a(t)) tau^2 KL(teacher || student) + beta MSE(P(f_S), f_T)

per sample (unlabelled samples have no CTC term), averaged over the batch.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import Tensor, nn

from ..charset import BLANK, Charset
from ..checkpoint import CheckpointError, file_sha256
from ..config import Config, ConfigError, DistillConfig
from ..datasets import DatasetSpec, Problems, Sample, detect_format, read_dataset, spec_of
from ..datasets.folder import IMAGE_SUFFIXES
from ..model import HTRNet, ModelConfig, count_parameters
from ..runtime import TTA_CHOICES, shift_rows, tta_shifts
from .module import HTRModule, ctc_loss

log = logging.getLogger("htrjand")


# ---- losses and the curriculum ------------------------------------------------------------------
def frame_mask(lengths: Tensor, frames: int) -> Tensor:
    """`[B, T]` True on real (non-padding) frames."""
    return torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]


def kd_loss(student: Tensor, teacher: Tensor, lengths: Tensor, temperature: float = 2.0,
            columns: Tensor | None = None, blank_threshold: float = 0.95, blank_weight: float = 1.0) -> Tensor:
    """Per-sample `tau^2 * mean_t KL(softmax(z_T/tau) || softmax(z_S/tau))` over real frames `[B]`.

    `student` `[B, T, C_S]` and `teacher` `[B, T, C_T]` are logits, `lengths` `[B]` the real frames.
    `columns` `[C_S]` gives the Teacher column of each Student class (-1 where the Teacher lacks
    it: probability 0); the Teacher's distribution is renormalised over the columns it keeps.
    Frames where the Teacher's blank posterior (at tau = 1) exceeds `blank_threshold` count with
    `blank_weight` in a weighted frame mean.
    """
    if student.shape[:2] != teacher.shape[:2]:
        raise ValueError(f"Student and Teacher frames do not align: {tuple(student.shape[:2])} "
                         f"vs {tuple(teacher.shape[:2])} (batch, frames)")
    teacher = teacher.detach().float()
    blank = teacher.softmax(-1)[..., BLANK]
    if columns is not None:
        teacher = teacher[..., columns.clamp_min(0)].masked_fill(columns < 0, float("-inf"))
    log_t = (teacher / temperature).log_softmax(-1)
    p_t = log_t.exp()
    log_s = (student.float() / temperature).log_softmax(-1)
    kl = (p_t * (log_t - log_s)).where(p_t > 0, 0.0).sum(-1)  # 0 log 0 = 0 for columns the Teacher lacks
    weight = frame_mask(lengths, kl.shape[1]).float()
    if blank_weight != 1.0:
        weight = weight * torch.where(blank > blank_threshold, blank_weight, 1.0)
    kl = kl.where(weight > 0, 0.0)  # padding never reaches the loss, whatever the logits there
    return temperature ** 2 * (kl * weight).sum(1) / weight.sum(1).clamp_min(1e-6)


def teacher_averaged(teacher: nn.Module, images: Tensor, widths: Tensor, logits: Tensor, count: int) -> Tensor:
    """The mean of the Teacher's frame log-probabilities over the line (its `logits`) and `count` - 1
    copies shifted up and down (`runtime.tta_shifts`): the Teacher as `--tta count` reads it."""
    total = logits.float().log_softmax(-1)
    for rows in tta_shifts(images.shape[2], count)[1:]:
        total = total + teacher(shift_rows(images, rows), widths)[0].float().log_softmax(-1)
    return total / count


def feature_loss(projected: Tensor, teacher: Tensor, lengths: Tensor) -> Tensor:
    """Per-sample mean over real frames of the squared error, averaged over feature dims `[B]`."""
    error = (projected.float() - teacher.detach().float()).pow(2).mean(-1)
    mask = frame_mask(lengths, error.shape[1])
    return error.where(mask, 0.0).sum(1) / mask.sum(1).clamp_min(1)


def alpha_at(progress: float, start: float = 0.9, end: float = 0.5, schedule: str = "linear",
             stages: int = 3) -> float:
    """Curriculum weight a(t) of the CTC term at training progress 0..1 (linear or in equal stages)."""
    p = min(1.0, max(0.0, progress))
    if schedule == "step":
        stage = min(stages - 1, int(p * stages))
        return start + (end - start) * stage / max(1, stages - 1)
    return start + (end - start) * p


def check_settings(d: DistillConfig) -> None:
    """ConfigError for distillation settings out of range."""
    problems = []
    if not d.temperature > 0:
        problems.append(f"temperature must be > 0 (got {d.temperature})")
    for name in ("alpha_start", "alpha_end", "blank_threshold"):
        if not 0.0 <= getattr(d, name) <= 1.0:
            problems.append(f"{name} must be between 0 and 1 (got {getattr(d, name)})")
    if d.alpha_schedule not in ("linear", "step"):
        problems.append(f"alpha_schedule must be linear or step (got {d.alpha_schedule!r})")
    if d.alpha_schedule == "step" and d.alpha_stages < 2:
        problems.append(f"alpha_stages must be at least 2 (got {d.alpha_stages})")
    for name in ("feature_weight", "blank_weight"):
        if getattr(d, name) < 0:
            problems.append(f"{name} must be >= 0 (got {getattr(d, name)})")
    if d.teacher_tta not in TTA_CHOICES:
        problems.append(f"teacher_tta must be one of {', '.join(map(str, TTA_CHOICES))} (got {d.teacher_tta})")
    if d.student_charset not in ("data", "teacher"):
        problems.append(f"student_charset must be data or teacher (got {d.student_charset!r})")
    if problems:
        raise ConfigError("distill: " + "; ".join(problems))


# ---- the Teacher --------------------------------------------------------------------------------
@dataclass
class Teacher:
    """A frozen Teacher network with its charset and the record the Student's checkpoint keeps."""

    net: HTRNet
    charset: Charset
    path: Path
    record: dict  # path, sha256, preset, parameters, metrics, epoch, step, model


def load_teacher(path: str | Path) -> Teacher:
    """Load a Teacher checkpoint in eval mode without gradients; refuse one with non-finite weights."""
    from ..recognition import Recognizer

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: Teacher checkpoint not found")
    recognizer = Recognizer.from_checkpoint(path)  # CheckpointError naming the file if unusable
    net = recognizer.model.eval().requires_grad_(False)
    bad = [name for name, t in net.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise CheckpointError(f"{path}: the Teacher's weights contain NaN or infinite values "
                              f"({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}); it cannot teach")
    meta = recognizer.meta
    record = {"path": str(path.resolve()), "sha256": file_sha256(path), "preset": meta.get("preset") or "custom",
              "parameters": count_parameters(net), "metrics": meta.get("metrics", {}), "epoch": meta.get("epoch"),
              "step": meta.get("step"), "charset_size": len(recognizer.charset), "model": meta["model"]}
    return Teacher(net, recognizer.charset, path, record)


def check_alignment(teacher: ModelConfig, student: ModelConfig, where: str | Path) -> None:
    """ConfigError unless Teacher and Student read the same height with the same width stride."""
    if teacher.height != student.height:
        raise ConfigError(f"{where}: the Teacher reads lines of height {teacher.height} px but the Student's "
                          f"height is {student.height}; distillation needs the same input (--height {teacher.height})")
    if teacher.width_stride != student.width_stride:
        raise ConfigError(
            f"{where}: the Teacher's width stride is {teacher.width_stride} but the Student's is "
            f"{student.width_stride} (pools {[list(p) for p in student.pools]}), so their frame sequences would "
            f"not align; give the Student pools whose widths multiply to {teacher.width_stride}, e.g. the "
            f"Teacher's --pools '{[list(p) for p in teacher.pools]}'")


def teacher_columns(teacher: Charset, student: Charset, where: str | Path) -> tuple[Tensor | None, str]:
    """Teacher column of each Student class (None when the charsets are identical) and a description.

    Allowed when one charset contains the other; a Student class the Teacher lacks gets -1."""
    if teacher == student:
        return None, "identical"
    t, s = set(teacher.chars), set(student.chars)
    only_t, only_s = "".join(sorted(t - s)), "".join(sorted(s - t))
    if only_t and only_s:
        raise ConfigError(
            f"{where}: the Teacher's charset does not fit the Student's and neither contains the other: the "
            f"Teacher lacks {only_s!r}, the Student lacks {only_t!r}. Use --student-charset teacher (the Student "
            f"takes the Teacher's charset; lines with other characters are skipped) or distil on data whose "
            f"characters the Teacher knows")
    index = {c: i + 1 for i, c in enumerate(teacher.chars)}
    columns = torch.tensor([BLANK] + [index.get(c, -1) for c in student.chars], dtype=torch.long)
    if only_t:
        relation = f"Student charset is a subset: {len(only_t)} Teacher characters dropped ({only_t!r})"
    elif only_s:
        relation = f"Teacher charset is a subset: it never predicts {len(only_s)} Student characters ({only_s!r})"
        log.warning("%s: the Teacher lacks %r; the KD term treats them as impossible, only CTC teaches them",
                    where, only_s)
    else:
        relation = "same characters, reordered"
    return columns, relation


# ---- unlabelled data ----------------------------------------------------------------------------
def read_unlabelled(values: list, problems: Problems) -> list[tuple[DatasetSpec, list[Sample]]]:
    """Datasets for the KD term only, each with its samples (text emptied). A folder yields all its
    images, with or without transcriptions; other formats keep their lines without text too."""
    parts = []
    for value in values:
        spec = spec_of(value)
        spec.keep_empty = True
        fmt = spec.format if spec.format != "auto" else detect_format(spec.path)
        if fmt == "folder":
            images = sorted(p for p in spec.path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            samples = [Sample(p, "", spec.name or spec.path.name, "", str(p)) for p in images]
        else:
            samples = read_dataset(spec, problems)
        for s in samples:
            s.text = ""
        if not samples:
            problems.add("no lines", str(spec.path), "unlabelled dataset has no line images")
        parts.append((spec, samples))
    return parts


# ---- setting a run up ---------------------------------------------------------------------------
def _settings(stored: dict) -> DistillConfig:
    known = {f.name for f in fields(DistillConfig)}
    return DistillConfig(**{k: v for k, v in stored.items() if k in known})


class Distillation:
    """A distillation run: the Teacher, settings, Student charset and the record for the checkpoint."""

    def __init__(self, settings: DistillConfig, teacher: Teacher, charset: Charset, columns: Tensor | None,
                 relation: str):
        self.settings, self.teacher, self.charset = settings, teacher, charset
        self.columns, self.relation = columns, relation
        self._unlabelled: set[int] = set()  # ids of the samples that only the KD term uses
        self.record = {"teacher": teacher.record, "settings": asdict(settings), "charset": relation,
                       "unlabelled_lines": 0}

    @classmethod
    def setup(cls, cfg: Config, charset: Charset, checkpoint: dict | None = None,
              resume: str | None = None) -> "Distillation | None":
        """The run's distillation (None for plain training), checked before any training.

        On resume the Teacher is re-loaded from its path and must be the same file (sha256); a
        resumed distillation given no Teacher continues with the settings it was started with."""
        stored = (checkpoint or {}).get("hyper_parameters", {}).get("htrjand", {}).get("distillation")
        if stored and not cfg.distill.teacher:
            cfg.distill = _settings({**stored["settings"], "teacher": stored["teacher"]["path"]})
            log.info("resuming a distillation from %s", cfg.distill.teacher)
        d = cfg.distill
        if not d.teacher:
            return None
        if checkpoint is not None and not stored:
            raise ConfigError(f"{resume}: this checkpoint comes from plain training, not distillation, and cannot "
                              f"be resumed as one (start a new run instead of --resume)")
        check_settings(d)
        teacher = load_teacher(d.teacher)
        if stored:
            if teacher.record["sha256"] != stored["teacher"]["sha256"]:
                raise CheckpointError(f"{d.teacher}: the Teacher file has changed since this run started "
                                      f"(sha256 {teacher.record['sha256'][:12]}, the run recorded "
                                      f"{stored['teacher']['sha256'][:12]}); resuming needs the same Teacher")
            if (stored["settings"].get("feature_weight", 0) > 0) != (d.feature_weight > 0):
                raise ConfigError(f"{resume}: feature_weight must stay {'> 0' if d.feature_weight == 0 else '0'} "
                                  f"on resume (the feature projection exists only when it is > 0)")
        check_alignment(teacher.net.config, cfg.model, teacher.path)
        if checkpoint is None and d.student_charset == "teacher":
            charset = teacher.charset
        columns, relation = teacher_columns(teacher.charset, charset, teacher.path)
        return cls(d, teacher, charset, columns, relation)

    def unlabelled(self, problems: Problems) -> list[tuple[DatasetSpec, list[Sample]]]:
        """The KD-only datasets (their samples have empty text and are remembered as unlabelled)."""
        parts = read_unlabelled(self.settings.unlabelled, problems)
        self._unlabelled.update(id(s) for _, samples in parts for s in samples)
        return parts

    def module_for(self, train_set) -> Callable[..., "DistillModule"]:
        """A constructor with `HTRModule`'s arguments for the run's `DistillModule`, Teacher attached;
        `train_set` (prepared samples, in training order) tells which samples are unlabelled."""
        unlabelled = torch.tensor([id(s) in self._unlabelled for s in train_set.samples], dtype=torch.bool)
        self.record["unlabelled_lines"] = int(unlabelled.sum())

        def build(model: dict, charset: list[str], **kwargs) -> DistillModule:
            kwargs["htrjand"] = {**(kwargs.get("htrjand") or {}), "distillation": self.record}
            module = DistillModule(model, charset, distill=asdict(self.settings),
                                   teacher_width=self.teacher.net.config.d_model, **kwargs)
            module.attach(self.teacher.net, self.columns, unlabelled)
            return module

        return build

    def check_outputs(self, data) -> None:
        """Run the Teacher on the first training batch; CheckpointError if its outputs are not finite."""
        dataset = data.train_set
        items = [dataset[(i, 0)] for i in range(min(len(dataset), data.batch_size))]
        batch = data.collate(items)
        if "images" not in batch:
            return
        with torch.no_grad():
            logits, _ = self.teacher.net(batch["images"], batch["widths"])
        if not torch.isfinite(logits).all():
            raise CheckpointError(f"{self.teacher.path}: the Teacher's outputs contain NaN or infinite values on "
                                  f"the first training batch; it cannot teach (did its training diverge?)")

    def summary(self) -> dict:
        t = self.teacher.record
        return {"teacher": t["path"], "teacher_sha256": t["sha256"], "teacher_parameters": t["parameters"],
                "teacher_preset": t["preset"], "charset": self.relation,
                "unlabelled_lines": self.record["unlabelled_lines"], "settings": asdict(self.settings)}


# ---- the Lightning module -----------------------------------------------------------------------
class DistillModule(HTRModule):
    """`HTRModule` whose training step learns from a frozen Teacher as well as from the labels.

    The Teacher is held outside the module's registry: it is not in the state dict, not in the
    optimiser, and Lightning's `train()` never switches it out of eval mode. The feature projection
    (when `feature_weight > 0`) is trained and kept in the training checkpoint for exact resume, but
    it is no part of the Student network (`model.*`), which is all that recognition loads.
    """

    def __init__(self, model: dict, charset: list[str], train: dict | None = None, data: dict | None = None,
                 preset: str = "", htrjand: dict | None = None, distill: dict | None = None,
                 teacher_width: int = 0):
        super().__init__(model, charset, train, data, preset, htrjand)
        self.settings = _settings(distill or {})
        self.projection = (nn.Linear(self.model_config.d_model, teacher_width)
                           if self.settings.feature_weight > 0 else None)
        self.register_buffer("columns", torch.empty(0, dtype=torch.long), persistent=False)
        self.register_buffer("unlabelled", torch.empty(0, dtype=torch.bool), persistent=False)
        object.__setattr__(self, "teacher", None)

    def attach(self, teacher: HTRNet, columns: Tensor | None = None, unlabelled: Tensor | None = None) -> None:
        """Give the module its Teacher, the Teacher column per Student class and the unlabelled mask
        (indexed by training sample)."""
        object.__setattr__(self, "teacher", teacher.eval().requires_grad_(False))  # unregistered on purpose
        self.columns = columns if columns is not None else torch.empty(0, dtype=torch.long)
        self.unlabelled = unlabelled if unlabelled is not None else torch.empty(0, dtype=torch.bool)

    def on_fit_start(self) -> None:
        if self.teacher is None:
            raise RuntimeError("DistillModule has no Teacher: call attach() before fitting")
        self.teacher.to(device=self.device, dtype=next(self.model.parameters()).dtype)
        if self.training_limits() == (0, None):
            log.warning("training length unknown (no epoch, step or time limit): a(t) stays at alpha_start")

    def on_train_epoch_start(self) -> None:
        self.teacher.eval()

    def alpha(self) -> float:
        s = self.settings
        return alpha_at(self.training_progress(self.global_step), s.alpha_start, s.alpha_end, s.alpha_schedule,
                        s.alpha_stages)

    def training_step(self, batch, batch_idx):
        self.unreadable += batch["unreadable"]
        if "images" not in batch:
            return None
        s = self.settings
        images, widths = batch["images"], batch["widths"]
        features, lengths = self.model.features(images, widths)
        logits = self.model.head(features)
        with torch.no_grad():
            t_features, _ = self.teacher.features(images, widths)
            t_logits = self.teacher.head(t_features)
            if s.teacher_tta > 1:
                t_logits = teacher_averaged(self.teacher, images, widths, t_logits, s.teacher_tta)
        alpha = self.alpha()
        kd = kd_loss(logits, t_logits, lengths, s.temperature, self.columns if self.columns.numel() else None,
                     s.blank_threshold, s.blank_weight)
        loss = (1 - alpha) * kd
        labelled = (~self.unlabelled[batch["indices"]] if self.unlabelled.numel()
                    else torch.ones_like(lengths, dtype=torch.bool))
        n = len(kd)
        if labelled.any():  # unlabelled samples have empty targets, so the concatenated targets are the labelled ones
            ctc = ctc_loss(logits[labelled], lengths[labelled], batch["targets"], batch["target_lengths"][labelled])
            self.infeasible += int((ctc == 0).sum())
            loss = loss + alpha * torch.zeros_like(kd).masked_scatter(labelled, ctc)
            self.log("ctc_loss", ctc.mean(), batch_size=int(labelled.sum()))
        if self.projection is not None:
            feature = feature_loss(self.projection(features), t_features, lengths)
            loss = loss + s.feature_weight * feature
            self.log("feature_loss", feature.mean(), batch_size=n)
        loss = loss.mean()
        self.log("loss", loss, prog_bar=True, batch_size=n)
        self.log("kd_loss", kd.mean(), batch_size=n)
        self.log("kd_alpha", alpha, batch_size=n)
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=n)
        return loss
