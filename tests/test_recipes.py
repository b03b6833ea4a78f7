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
        assert cfg.preset == "student" and cfg.distill.teacher == "runs/teacher/best.ckpt"


def test_pipeline_recipe_passes_its_checks(monkeypatch):
    """Its checks need the data it names (present in CI as ../shared/data)."""
    root = RECIPES.parent
    if not (root / "../shared/data/copiste/train.tsv").is_file():
        pytest.skip("../shared/data is not here")
    from htrjand.pipeline import Pipeline

    monkeypatch.chdir(root)
    pipeline = Pipeline("recipes/pipeline.yaml")
    assert [s["name"] for s in pipeline.stages] and pipeline.student
