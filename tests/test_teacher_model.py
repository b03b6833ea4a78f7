"""The committed Teacher (models/teacher.ckpt, GPU run 4: GPU run 3's continued): a weights-only Teacher-preset
checkpoint that reads real test lines better than the bundled Student it is there to teach (docs/results.md)."""
from __future__ import annotations

from pathlib import Path

import pytest

import htrjand
from htrjand.datasets import Problems, read_datasets, spec_of
from htrjand.evaluation import evaluate

from conftest import EXAMPLES

TEACHER = Path(__file__).resolve().parents[1] / "models" / "teacher.ckpt"


@pytest.fixture(scope="module")
def teacher():
    return htrjand.load(TEACHER)


@pytest.fixture(scope="module")
def student():
    return htrjand.load()


def test_teacher_is_a_weights_only_teacher_preset(teacher):
    assert teacher.meta["preset"] == "teacher"
    assert 1_400_000 < teacher.parameters < 1_600_000
    assert TEACHER.stat().st_size < 8_000_000  # no optimizer state


@pytest.mark.parametrize("dataset", ["copiste", "hooker"])
def test_teacher_reads_real_test_lines_better_than_the_bundled_student(teacher, student, shared_data, dataset):
    samples = read_datasets([spec_of(str(shared_data / dataset / "test.tsv"))], Problems())[:100]
    cer = {name: evaluate(model, samples, batch_size=16)["overall"]["cer"]
           for name, model in (("teacher", teacher), ("student", student))}
    assert cer["teacher"] < cer["student"], cer


def test_teacher_reads_the_shipped_examples(teacher):
    cer = evaluate(teacher, read_datasets([spec_of(str(EXAMPLES))], Problems()), batch_size=16)["overall"]["cer"]
    assert cer < 0.10, cer
