"""Typed run configuration: YAML files plus command-line overrides for every field.

A config has the sections `model`, `data`, `train` and `distill`, each a dataclass whose fields
carry their own help text. The CLI turns every field into a `--flag` (see `add_arguments`).
"""
from __future__ import annotations

import argparse
import logging
import reprlib
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .charmap import safe_yaml
from .model import ModelConfig, preset

log = logging.getLogger("htrjand")


def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool | None:
    """Whether the CPU computes bfloat16 natively (x86 AVX512-BF16 or AMX, Arm BF16); None where unknown."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    flags = {flag for line in text.splitlines() if line.startswith(("flags", "Features"))
             for flag in line.partition(":")[2].split()}
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"}) if flags else None


def resolve_precision(precision: str, accelerator: str) -> str:
    """'auto' -> bf16 mixed precision on GPUs that support it, full precision elsewhere. Warns when bf16 is
    asked for on a CPU that only emulates it (it trains slower than float32 there, not faster)."""
    import torch  # not at the top: the CLI parser imports this module, and `--engine onnx` runs without torch

    use_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if precision != "auto":
        if precision.startswith("bf16") and not use_gpu and cpu_has_native_bf16() is False:
            log.warning("precision %s on a CPU without native bfloat16 (no AVX512-BF16, AMX or Arm BF16 in "
                        "/proc/cpuinfo): emulated, it trains slower than --precision 32 here", precision)
        return precision
    if use_gpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


class ConfigError(ValueError):
    """A config file or option that cannot be used."""


_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(value: str | float | None, where: str = "max_time") -> float | None:
    """Seconds of a wall-time limit written as seconds, 90m / 2h / 1d, HH:MM:SS or DD:HH:MM:SS (None if empty)."""
    text = str(value if value is not None else "").strip().lower()
    if not text:
        return None
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            seconds = sum(p * f for p, f in zip(reversed(parts), (1, 60, 3600, 86400))) if len(parts) in (3, 4) else -1
        elif text[-1] in _SECONDS:
            seconds = float(text[:-1]) * _SECONDS[text[-1]]
        else:
            seconds = float(text)
    except ValueError:
        seconds = -1
    if not 0 < seconds < float("inf"):
        raise ConfigError(f"{where}: {value!r} is not a time limit (seconds, 90m, 2h, 1d, HH:MM:SS or DD:HH:MM:SS)")
    return seconds


@dataclass
class DataConfig:
    train: list[Any] = field(default_factory=list, metadata={
        "help": "training datasets: [FORMAT:]PATH[?split=..&weight=..] each (TSV manifests, image + .gt.txt "
                "folders, PAGE/ALTO, IAM, RIMES, Bentham, Washington, Saint Gall, HF/Parquet; see docs/datasets.md); "
                "with weights, batches draw from the datasets in proportion to them"})
    val: list[Any] = field(default_factory=list, metadata={"help": "validation datasets, same forms"})
    test: list[Any] = field(default_factory=list, metadata={
        "help": "test datasets, evaluated with the best checkpoint when training ends (optional)"})
    charset_mapping: str = field(default="default", metadata={
        "help": "character standardisation: default | none | a YAML/JSON mapping file (docs/charset.md)"})
    cache: str = field(default="auto", metadata={
        "help": "decoded-line cache: auto (memory if it fits in cache_max_gb, else disk) | memory | disk | off"})
    cache_dir: str = field(default="", metadata={"help": "folder of the disk cache (default: OUTPUT/cache)"})
    cache_max_gb: float = field(default=4.0, metadata={"help": "largest in-memory cache for cache=auto"})
    batch_size: int = field(default=16, metadata={"help": "lines per batch (upper bound)"})
    max_batch_pixels: int = field(default=0, metadata={
        "help": "also cap padded pixels per batch (0 = no cap); keeps memory flat across widths"})
    workers: int = field(default=2, metadata={"help": "data loader worker processes"})
    augment: float = field(default=1.0, metadata={"help": "augmentation strength (0 = off)"})
    stretch: float = field(default=0.0, metadata={
        "help": "width augmentation: half the lines' width alone scaled by a factor from 1/(1+x) to 1+x "
                "(0 = off; independent of augment)"})
    curriculum_epochs: int = field(default=0, metadata={
        "help": "curriculum: over this many epochs the lines drawn grow from the shortest (by label length) "
                "to all of them (0 = off)"})
    curriculum_start: float = field(default=0.3, metadata={
        "help": "curriculum: share of the lines (the shortest) drawn in the first epoch"})
    max_width: int = field(default=4096, metadata={"help": "widest line in pixels after height normalisation"})


@dataclass
class TrainConfig:
    output: str = field(default="runs/htrjand", metadata={"help": "run folder: checkpoints, logs, summary"})
    epochs: int = field(default=100, metadata={"help": "maximum epochs"})
    max_time: str = field(default="", metadata={
        "help": "stop after this wall time: seconds, 90m, 2h, HH:MM:SS or DD:HH:MM:SS (empty = no limit); the cosine schedule "
                "and the distillation weight a(t) end with it when it comes before max_steps / epochs"})
    max_steps: int = field(default=-1, metadata={"help": "stop after this many optimiser steps (-1 = no limit)"})
    lr: float = field(default=1e-3, metadata={"help": "peak AdamW learning rate"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    warmup_steps: int = field(default=500, metadata={"help": "linear warm-up steps"})
    schedule: str = field(default="cosine", metadata={"help": "cosine | plateau (on validation CER) | constant"})
    plateau_patience: int = field(default=3, metadata={"help": "epochs without improvement before the plateau schedule halves the LR"})
    grad_clip: float = field(default=5.0, metadata={"help": "gradient norm clipping (0 = off)"})
    precision: str = field(default="auto", metadata={
        "help": "auto (bf16-mixed on GPUs that support it, else 32) or any Lightning precision; on a CPU with "
                "native bfloat16 (AVX512-BF16, AMX) bf16-mixed trains ~1.4x faster, on one without it ~1.8x "
                "slower (a warning says so)"})
    accelerator: str = field(default="auto", metadata={"help": "cpu | gpu | auto"})
    devices: str = field(default="auto", metadata={"help": "devices per node (number, list or auto)"})
    strategy: str = field(default="auto", metadata={"help": "Lightning strategy, e.g. ddp"})
    num_nodes: int = field(default=1, metadata={"help": "nodes for multi-node DDP"})
    sync_batchnorm: bool = field(default=True, metadata={
        "help": "DDP: BatchNorm statistics over the global batch, as one process would (false: per rank)"})
    seed: int = field(default=42, metadata={"help": "random seed (model init, data order, augmentation)"})
    deterministic: bool = field(default=False, metadata={"help": "force deterministic kernels (slower on GPU)"})
    patience: int = field(default=10, metadata={"help": "early stopping: validations without a better CER"})
    stop_cer: float = field(default=0.0, metadata={"help": "stop as soon as validation CER reaches this (0 = off)"})
    val_every: float = field(default=1.0, metadata={
        "help": "validate every N epochs (>= 1) or every fraction of an epoch (< 1)"})
    checkpoint_every: int = field(default=200, metadata={"help": "write last.ckpt every N steps (and at epoch end)"})
    resume: str = field(default="", metadata={
        "help": "checkpoint to resume from, or 'auto' for OUTPUT/last.ckpt (falling back to last.prev.ckpt, "
                "with a warning, when last.ckpt fails its sha256 check)"})
    aux_ctc_weight: float = field(default=0.0, metadata={
        "help": "multi-task: weight of an auxiliary CTC loss from a head on the CNN features (training only, "
                "not in inference or exported models; 0 = off)"})
    dataset_head_weight: float = field(default=0.0, metadata={
        "help": "multi-task: weight of a classification loss that predicts each line's dataset from the pooled "
                "attention features (training only; 0 = off)"})
    init: str = field(default="", metadata={
        "help": "fine-tune: start from this checkpoint's weights ('bundled' = the bundled Student) with a fresh "
                "optimiser and schedule; its architecture is used (docs/finetuning.md)"})
    charset_mode: str = field(default="extend", metadata={
        "help": "with --init: extend (its charset + new characters of the training text) | replace (the "
                "training text's charset; shared characters keep their rows) | keep (its charset; lines with "
                "other characters are skipped)"})
    freeze_cnn: bool = field(default=False, metadata={
        "help": "train the attention blocks and the head only: CNN weights and BatchNorm statistics stay fixed"})
    max_bad_steps: int = field(default=20, metadata={
        "help": "a step with a NaN/inf loss or gradient is skipped; stop after this many in a row (0 = never stop)"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})


@dataclass
class DistillConfig:
    """Knowledge distillation (spec 2.5, docs/distillation.md): used when `teacher` is set."""

    teacher: str = field(default="", metadata={"help": "Teacher checkpoint to distil from (empty = plain training)"})
    temperature: float = field(default=2.0, metadata={
        "help": "softmax temperature tau of the frame-wise KL term (which is scaled by tau^2)"})
    alpha_start: float = field(default=0.9, metadata={
        "help": "curriculum: weight a of the CTC term at the start of training (the KD term gets 1 - a)"})
    alpha_end: float = field(default=0.5, metadata={"help": "curriculum: weight a of the CTC term at the end"})
    alpha_schedule: str = field(default="linear", metadata={
        "help": "how a moves from alpha_start to alpha_end over training progress: linear | step"})
    alpha_stages: int = field(default=3, metadata={
        "help": "stages of the step schedule (equal parts of training, a evenly spaced from start to end)"})
    feature_weight: float = field(default=0.0, metadata={
        "help": "beta of the feature loss: MSE between the projected Student and the Teacher attention "
                "outputs, through a learned projection (0 = off)"})
    blank_threshold: float = field(default=0.95, metadata={
        "help": "frames where the Teacher's blank posterior exceeds this are blank frames (see blank_weight)"})
    blank_weight: float = field(default=1.0, metadata={
        "help": "weight of blank frames in the KD frame mean (1 = no down-weighting, 0 = ignore them)"})
    unlabelled: list[Any] = field(default_factory=list, metadata={
        "help": "extra datasets learnt from the Teacher only (KD term; their text is ignored; folders may "
                "hold bare images), given like training data"})
    student_charset: str = field(default="data", metadata={
        "help": "Student charset: data (from the training text; Teacher columns mapped onto it) | teacher"})
    teacher_tta: int = field(default=1, metadata={
        "help": "the Teacher's targets averaged over this many readings of each line shifted up and down, as "
                "`--tta` reads (1, 3 or 5; 3: a better Teacher for 3x its work)"})


@dataclass
class Config:
    preset: str = "teacher"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    # model options the config file or the command line set (not the preset's): with `--init` these
    # change the checkpoint's architecture, the others come from the checkpoint
    model_given: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)


SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig, "distill": DistillConfig}


def _convert(value: Any, annotation: Any, where: str) -> Any:
    """Coerce a YAML/CLI value to a field's annotated type."""
    if isinstance(annotation, str):
        annotation = eval(annotation, {**vars(typing), "tuple": tuple, "list": list})  # noqa: S307 - own annotations
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    try:
        if origin in (typing.Union, types.UnionType):
            if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
                return None
            return _convert(value, next(a for a in args if a is not type(None)), where)
        if origin in (list, tuple):
            if isinstance(value, str):
                value = yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
            if not isinstance(value, (list, tuple)):
                value = [value]
            inner = args[0] if args else str
            if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
                return tuple(_convert(v, inner, where) for v in value)
            if origin is tuple:
                return tuple(_convert(v, a, where) for v, a in zip(value, args))
            return [_convert(v, inner, where) for v in value]
        if annotation is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if annotation in (int, float, str):
            if annotation is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return annotation(value)
    except (ValueError, TypeError, StopIteration, OverflowError, yaml.YAMLError, RecursionError):
        raise ConfigError(f"{where}: cannot use {reprlib.repr(value)} as "
                          f"{getattr(annotation, '__name__', annotation)}") from None
    return value


def _apply(section: Any, values: dict, where: str) -> None:
    known = {f.name: f for f in fields(section)}
    for key, value in values.items():
        key = str(key).replace("-", "_")
        if key not in known:
            raise ConfigError(f"{where}: unknown option {key!r} (known: {', '.join(known)})")
        setattr(section, key, _convert(value, known[key].type, f"{where}.{key}"))


def read_yaml(path: Path, what: str = "config file"):
    """The YAML document of `path` ({} when empty); clear `ConfigError`s naming the file."""
    try:
        return safe_yaml(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read {what} ({err})") from None
    except (yaml.YAMLError, ValueError, RecursionError) as err:  # ValueError: bad dates, huge integers
        raise ConfigError(f"{path}: not valid YAML ({str(err) or 'nested too deeply'})") from None


def load_config(path: str | Path | None = None, overrides: dict[str, dict] | None = None,
                preset_name: str | None = None, default_preset: str = "teacher") -> Config:
    """Config from defaults <- preset <- YAML file <- overrides (`{"train": {"lr": 1e-3}}`)."""
    raw: dict = {}
    if path:
        path = Path(path)
        raw = read_yaml(path, "config file")
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: a config must be a mapping with model/data/train sections")
        unknown = set(map(str, raw)) - {"preset", *SECTIONS}
        if unknown:
            raise ConfigError(f"{path}: unknown sections {', '.join(sorted(unknown))}")
    overrides = overrides or {}
    name = preset_name or overrides.get("preset") or raw.get("preset") or default_preset
    if not isinstance(name, str):
        raise ConfigError(f"{path or 'config'}: preset must be a name, got {reprlib.repr(name)}")
    try:
        cfg = Config(preset=name, model=preset(name))
    except ValueError as err:
        raise ConfigError(f"{path}: {err}" if path and raw.get("preset") == name else str(err)) from None
    where = str(path) if path else "config"
    for section in SECTIONS:
        if raw.get(section) is not None:
            if not isinstance(raw[section], dict):
                raise ConfigError(f"{where}: section {section!r} must be a mapping")
            _apply(getattr(cfg, section), raw[section], f"{where}:{section}")
        if overrides.get(section):
            _apply(getattr(cfg, section), overrides[section], f"--{section}")
    duration_seconds(cfg.train.max_time, f"{where}: train.max_time")
    given = [*(raw.get("model") or {}), *(overrides.get("model") or {})]  # both checked by _apply
    cfg.model_given = tuple(dict.fromkeys(str(k).replace("-", "_") for k in given))
    return cfg


def add_arguments(parser: argparse.ArgumentParser, sections: tuple[str, ...] = tuple(SECTIONS)) -> None:
    """One `--flag` per config field (dashes for underscores), grouped by section, with its help."""
    for name in sections:
        group = parser.add_argument_group(f"{name} options (YAML section '{name}')")
        for f in fields(SECTIONS[name]):
            default = f.default if f.default is not MISSING else f.default_factory()
            flag = "--" + f.name.replace("_", "-")
            kwargs = {"dest": f"{name}.{f.name}", "default": argparse.SUPPRESS,
                      "help": f"{f.metadata.get('help', '')} (default: {default})"}
            if typing.get_origin(f.type) is list or str(f.type).startswith("list"):
                kwargs["nargs"] = "+"
            group.add_argument(flag, **kwargs)


def overrides_from_args(args: argparse.Namespace) -> dict[str, dict]:
    """Collect `section.field` values that the user actually gave on the command line."""
    out: dict[str, dict] = {}
    for key, value in vars(args).items():
        if "." in key:
            section, name = key.split(".", 1)
            out.setdefault(section, {})[name] = value
    return out

