"""Multi-stage training from one config (spec 2.6): e.g. synthetic pre-training, multi-dataset real
training with synthetic lines mixed in, per-dataset fine-tuning; each stage starts from the previous
stage's best checkpoint, optionally distilling a Student at every stage. `htrjand pipeline CONFIG`.

Config (YAML): the sections of a train config (`preset`, `model`, `data`, `train`, `distill`) are
the defaults of every stage, plus

    output: runs/pipeline          # OUTPUT/<stage>/ per stage, OUTPUT/report.{md,json}
    synth: {text: [corpus.txt], fonts: null, seed: 0, min_chars: 10, max_chars: 60}  # generator defaults
    student: student               # optional: a Student distilled at every stage: preset name or {preset:, model options}
    stages:
      - name: synthetic
        synth: {lines: 20000, val_fraction: 0.05}   # rendered once into OUTPUT/<stage>/synth/
        data: {train: [], val: []}                   # synthetic lines only; their val split validates
        train: {epochs: 10}
      - name: real
        synth: {lines: 5000, weight: 0.2}            # mixed into the stage's real training data
        train: {epochs: 30}
      - name: hooker
        data: {train: [hooker/train.tsv], val: [hooker/val.tsv]}
        train: {epochs: 5, lr: 5.0e-4}
        init: previous                               # previous (default) | none | a checkpoint path

A stage's sections override the defaults key by key. Running the same command again resumes: finished
stages (their summary.json) are skipped, an interrupted one continues from its last.ckpt.
"""
from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path
from typing import Any

from .config import SECTIONS, ConfigError, load_config, read_yaml
from .datasets import spec_of

log = logging.getLogger("htrjand")
TOP_KEYS = {"output", "synth", "student", "stages", "preset", *SECTIONS}
STAGE_KEYS = {"name", "synth", "init", "charset_mode", "preset", *SECTIONS}


def _merge(base: dict, stage: dict) -> dict:
    merged = copy.deepcopy(base)
    for section, values in stage.items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section].update(values)
        else:
            merged[section] = values
    return merged


class Pipeline:
    """A parsed pipeline config, checked before any stage runs."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        raw = read_yaml(self.path, "pipeline config")
        if not isinstance(raw, dict):
            raise ConfigError(f"{self.path}: a pipeline config must be a mapping")
        unknown = set(raw) - TOP_KEYS
        if unknown:
            raise ConfigError(f"{self.path}: unknown keys {', '.join(sorted(unknown))} (known: {', '.join(sorted(TOP_KEYS))})")
        stages = raw.get("stages")
        if not isinstance(stages, list) or not stages:
            raise ConfigError(f"{self.path}: 'stages' must be a non-empty list")
        self.output = Path(raw.get("output") or "runs/pipeline")
        self.base = {k: raw[k] for k in ("preset", *SECTIONS) if k in raw}
        self.synth = raw.get("synth") or {}
        self.student = raw.get("student")
        self.stages: list[dict[str, Any]] = []
        names = set()
        for i, stage in enumerate(stages):
            where = f"{self.path}: stage {i + 1}"
            if not isinstance(stage, dict) or not stage.get("name"):
                raise ConfigError(f"{where}: each stage is a mapping with a 'name'")
            unknown = set(stage) - STAGE_KEYS
            if unknown:
                raise ConfigError(f"{where} ({stage['name']}): unknown keys {', '.join(sorted(unknown))}")
            if stage["name"] in names or not str(stage["name"]).replace("-", "").replace("_", "").isalnum():
                raise ConfigError(f"{where}: stage names must be unique words (got {stage['name']!r})")
            names.add(stage["name"])
            self.stages.append(stage)
        self.check()

    def config_of(self, stage: dict, student: bool = False):
        """The train config of a stage (its Teacher or, with `student`, its distilled Student)."""
        raw = _merge(self.base, {k: v for k, v in stage.items() if k in ("preset", *SECTIONS)})
        if student:  # the Student's own architecture: a preset name, or {preset: ..., model options}
            options = dict(self.student) if isinstance(self.student, dict) else {"preset": self.student}
            raw["preset"] = options.pop("preset", "student")
            raw["model"] = options
        else:
            raw.pop("distill", None)
        return load_config(None, {k: v for k, v in raw.items() if k in SECTIONS}, raw.get("preset"))

    def check(self) -> None:
        """Errors that would otherwise stop a later stage: missing data, checkpoints, synth text."""
        for stage in self.stages:
            where = f"{self.path}: stage {stage['name']}"
            cfg = self.config_of(stage)
            for value in [*cfg.data.train, *cfg.data.val, *cfg.data.test]:
                spec = spec_of(value)
                if not Path(spec.path).exists():
                    raise ConfigError(f"{where}: data {spec.path} not found")
            init = stage.get("init", "previous")
            if init not in ("previous", "none", "bundled") and not Path(init).is_file():
                raise ConfigError(f"{where}: init checkpoint {init} not found")
            if stage.get("synth"):
                settings = {**self.synth, **stage["synth"]}
                if not settings.get("text"):
                    raise ConfigError(f"{where}: synth needs 'text' (corpus files or datasets) in the top-level "
                                      "or the stage's synth section")
                if not settings.get("lines"):
                    raise ConfigError(f"{where}: synth needs 'lines' (how many to render)")
            elif not cfg.data.train:
                raise ConfigError(f"{where}: no training data (data.train or synth)")
            if not cfg.data.val and not (stage.get("synth") or {}).get("val_fraction"):
                raise ConfigError(f"{where}: no validation data (data.val or synth.val_fraction)")

    def run(self) -> dict:
        from .training import train

        self.output.mkdir(parents=True, exist_ok=True)
        report: dict[str, Any] = {"config": str(self.path), "output": str(self.output), "stages": []}
        previous: dict[str, str | None] = {"teacher": None, "student": None}
        for stage in self.stages:
            out = self.output / stage["name"]
            data = self._synthetic(stage, out / "synth") if stage.get("synth") else {}
            row: dict[str, Any] = {"name": stage["name"]}
            for role in ("teacher", "student") if self.student else ("teacher",):
                cfg = self.config_of(stage, student=role == "student")
                cfg.data.train = [*cfg.data.train, *data.get("train", [])]
                cfg.data.val = cfg.data.val or data.get("val", [])
                cfg.train.output = str(out / role)
                cfg.train.resume = "auto"
                init = stage.get("init", "previous")
                cfg.train.init = {"previous": previous[role] or "", "none": ""}.get(init, init)
                cfg.train.charset_mode = stage.get("charset_mode", cfg.train.charset_mode)
                if role == "student":
                    cfg.distill.teacher = str(out / "teacher" / "best.ckpt")
                summary = _finished(out / role) or train(cfg)
                previous[role] = str(out / role / "best.ckpt")
                row[role] = {k: summary.get(k) for k in ("best_val_cer", "epochs", "steps", "seconds", "parameters",
                                                          "best_checkpoint", "report")}
            report["stages"].append(row)
            self._write(report)
        return report

    def _synthetic(self, stage: dict, out: Path) -> dict[str, list[str]]:
        """Render the stage's synthetic lines once (a finished set is reused) and give its manifests."""
        from .synth import build_generator, write_dataset

        settings = {**self.synth, **stage["synth"]}
        weight, weight_end = settings.pop("weight", None), settings.pop("weight_end", None)
        if not (out / "train.tsv").is_file():
            text = settings["text"] if isinstance(settings["text"], list) else [settings["text"]]
            generator = build_generator(text, settings.get("fonts"), seed=int(settings.get("seed", 0)),
                                        height=int(settings.get("height", 64)), min_chars=settings.get("min_chars"),
                                        max_chars=settings.get("max_chars"), strength=float(settings.get("strength", 1.0)))
            log.info("stage %s: rendering %d synthetic lines into %s", stage["name"], settings["lines"], out)
            write_dataset(generator, out, int(settings["lines"]), float(settings.get("val_fraction", 0.0)),
                          workers=int(settings.get("workers") or os.cpu_count() or 1))
        suffix = "?name=synthetic" + (f"&weight={weight}" if weight is not None else "") + (
            f"&weight_end={weight_end}" if weight_end is not None else "")
        return {split: [f"{out / f'{split}.tsv'}{suffix if split == 'train' else '?name=synthetic'}"]
                for split in ("train", "val") if (out / f"{split}.tsv").is_file()}

    def _write(self, report: dict) -> None:
        lines = [f"# Pipeline {self.path}", "", "| stage | model | best val CER % | epochs | seconds | checkpoint |",
                 "|---|---|---|---|---|---|"]
        for row in report["stages"]:
            for role in ("teacher", "student"):
                if role in row:
                    r = row[role]
                    cer = f"{100 * r['best_val_cer']:.2f}" if r.get("best_val_cer") is not None else "-"
                    lines.append(f"| {row['name']} | {role} | {cer} | {r.get('epochs')} | {r.get('seconds')} | "
                                 f"{r.get('best_checkpoint')} |")
        for suffix, text in (("json", json.dumps(report, indent=2, ensure_ascii=False)), ("md", "\n".join(lines) + "\n")):
            tmp = self.output / f".report.{suffix}.tmp"
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.output / f"report.{suffix}")


def _finished(out: Path) -> dict | None:
    """The summary of a stage that completed (a later run skips it), else None."""
    summary = out / "summary.json"
    if summary.is_file() and (out / "best.ckpt").is_file():
        return json.loads(summary.read_text(encoding="utf-8"))
    return None
