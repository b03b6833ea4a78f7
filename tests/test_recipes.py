"""The published recipes stay valid configs: a renamed or misspelt option fails here, not after
an hour on a GPU."""
from __future__ import annotations

from pathlib import Path

import pytest

from htrjand.config import load_config

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
TRAIN_RECIPES = sorted(p for p in RECIPES.glob("*.yaml") if p.name != "pipeline.yaml")


def test_the_recipes_are_there():
    assert {p.name for p in TRAIN_RECIPES} >= {"teacher.yaml", "student.yaml", "distill.yaml", "distill-continue.yaml"}


@pytest.mark.parametrize("recipe", TRAIN_RECIPES, ids=lambda p: p.name)
def test_train_recipe_loads(recipe):
    cfg = load_config(recipe)
    assert cfg.data.train and cfg.data.val and cfg.data.test and cfg.train.output.startswith("runs/")
    if "distill" in recipe.name:
        assert cfg.preset == "student" and cfg.distill.teacher in ("runs/teacher/best.ckpt", "models/teacher.ckpt")
        assert (RECIPES.parent / cfg.distill.teacher).is_file() or cfg.distill.teacher.startswith("runs/")


def test_pipeline_recipe_passes_its_checks(monkeypatch):
    """Its checks need the data it names (present in CI as ../shared/data)."""
    root = RECIPES.parent
    if not (root / "../shared/data/copiste/train.tsv").is_file():
        pytest.skip("../shared/data is not here")
    from htrjand.pipeline import Pipeline

    monkeypatch.chdir(root)
    pipeline = Pipeline("recipes/pipeline.yaml")
    assert [s["name"] for s in pipeline.stages] and pipeline.student


def test_every_ablation_variant_is_a_valid_pipeline_changing_one_thing(tmp_path):
    """benchmarks/ablations.py: each variant passes the pipeline's checks, and an architecture variant
    differs from its baseline (`synthetic+real`) in its one model option only."""
    import argparse
    import dataclasses
    import importlib.util
    import sys

    import yaml

    from htrjand.pipeline import Pipeline

    script = RECIPES.parent / "benchmarks" / "ablations.py"
    sys.path.insert(0, str(script.parent))
    spec = importlib.util.spec_from_file_location("ablations", script)
    ablations = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ablations)
    manifest = tmp_path / "lines.tsv"
    manifest.write_text("a.png\tsome text\n", encoding="utf-8")
    args = argparse.Namespace(epochs=2, synth_lines=10, synth_epochs=1, preset="student", batch_size=4, lr=1e-3,
                              val=[str(manifest)], test=[str(manifest)], synth_text=None)
    models = {}
    for variant in ablations.VARIANTS:
        path = tmp_path / f"{variant}.yaml"
        path.write_text(yaml.safe_dump(ablations.pipeline_config(variant, args, manifest, tmp_path / "runs", [manifest], seed=1)))
        pipeline = Pipeline(path)
        stages = [s["name"] for s in pipeline.stages]
        pretrained = variant == "synthetic+real" or variant in ablations.MODEL_VARIANTS
        assert stages == (["synthetic", "real"] if pretrained else ["real"]), variant
        models[variant] = dataclasses.asdict(pipeline.config_of(pipeline.stages[-1]).model)
    base = models["synthetic+real"]
    for variant, options in ablations.MODEL_VARIANTS.items():
        changed = {k for k in base if models[variant][k] != base[k]}
        assert changed == set(options), variant
        assert all(models[variant][k] == v for k, v in options.items())
