"""`toolkit-eval --decoder sparse`: the loss reported is the loss of the decoding path, and
relu_stats saves predictors that the decoder then reads back.

The relu path computes each token's exact FFN, so its loss is the dense loss to float tolerance
(whole sequences in DRAM; token by token from a bundle). A predictor file relu_stats saved,
decoded with, scores exactly as the fitted predictors did (same precision, recall and loss).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolkit.cli.common import run_cli
from toolkit.cli.eval import main_with_arguments as eval_main

from helpers import assert_error_output

RELU_STATS = ["sequences=2", "predictor_sequences=2", "windows=[1, 2]", "--no-progress"]


def evaluate(capsys, *arguments: str) -> dict:
    code = run_cli(eval_main, [*arguments, "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    output = arguments[arguments.index("--output") + 1]
    return json.loads((Path(output) / "results.json").read_text())


def test_perplexity_is_scored_on_the_decoding_path(relu_run, sparse_files, tmp_path, capsys):
    bundle, _, cap = sparse_files
    common = ["perplexity", "--model", str(relu_run), "--limit", "2", "--batch-size", "1"]
    dense = evaluate(capsys, *common, "--output", str(tmp_path / "dense"))
    in_dram = evaluate(capsys, *common, "--output", str(tmp_path / "dram"), "--decoder", "sparse")
    options = f"{{active: relu, bundle: {bundle}, dram_cap: {cap}}}"
    on_disk = evaluate(capsys, *common, "--output", str(tmp_path / "disk"), "--decoder", "sparse",
                       "--decoder-options", options)
    assert "notes" not in dense and "decoder" not in dense
    assert in_dram["decoder"] == {"name": "sparse", "options": "{}"}
    assert on_disk["decoder"] == {"name": "sparse", "options": options}
    for result in (in_dram, on_disk):
        assert result["metrics"]["tokens"] == dense["metrics"]["tokens"] == 32  # 2 windows of 16
        assert result["metrics"]["nll_per_token"] == pytest.approx(dense["metrics"]["nll_per_token"], rel=1e-5)
    assert in_dram["notes"] == ["sparse decoding (active=relu (oracle: reads every gate row), FFN weights in "
                                "DRAM, one-token steps by the fused gather (numba)); 32 tokens run as whole sequences (a prefill, "
                                "or scoring), each token with its own active set"]
    note = on_disk["notes"][0]
    # two windows of 16 inputs, one row at a time (--batch-size 1), one position at a time: 32 steps
    assert note.startswith("sparse decoding (active=relu (oracle: reads every gate row), FFN weights from "
                           f"{bundle} under a {cap}-byte DRAM cap, window 5, the model's own FFN weights released "
                           "(0.0")  # the tiny run's up rows and down columns; its gate rows stay for the oracle
    assert "MB), one-token steps by the fused kernel on the cache's slots (numba)); 32 one-token steps in " in note
    assert "read from disk per token" in note and "cache hit rate 0." in note and "cost model" in note


def test_relu_stats_saves_predictors_and_scores_them_again_through_the_decoder(relu_run, sparse_files, tmp_path,
                                                                               capsys):
    bundle, _, cap = sparse_files
    saved = tmp_path / "predictors.safetensors"
    fitted = evaluate(capsys, "relu_stats", "--model", str(relu_run), "--output", str(tmp_path / "fit"), *RELU_STATS,
                      "predictor_rank=4", "predictor_steps=20", f"save_predictors={saved}")
    assert fitted["metrics"]["predictor"]["saved_to"] == str(saved) and saved.is_file()
    assert "decoding" not in fitted["metrics"]
    decoded = evaluate(capsys, "relu_stats", "--model", str(relu_run), "--output", str(tmp_path / "decode"),
                       *RELU_STATS, "--decoder", "sparse", "--decoder-options",
                       f"{{active: predictor, predictors: {saved}}}")
    before, after = fitted["metrics"]["predictor"], decoded["metrics"]["predictor"]
    assert after["layers"] == before["layers"]  # the same predictors: precision, recall, active share
    assert after["sparse_val_loss"] == before["sparse_val_loss"]
    decoding = decoded["metrics"]["decoding"]
    assert decoding["path"].startswith(f"active=predictor {saved} (rank 4, threshold 0.3)")
    assert decoding["scored"] == "whole sequences"
    assert decoding["val_loss"] == pytest.approx(before["sparse_val_loss"], rel=1e-6)
    assert decoded["metrics"]["val_loss"] == fitted["metrics"]["val_loss"]  # the statistics are the model's own
    from_disk = evaluate(capsys, "relu_stats", "--model", str(relu_run), "--output", str(tmp_path / "disk"),
                         *RELU_STATS, "--decoder", "sparse", "--decoder-options",
                         f"{{active: relu, bundle: {bundle}, dram_cap: {2 * cap}, keep_model_ffn: true}}")  # 2 rows' neurons at once
    decoding = from_disk["metrics"]["decoding"]
    assert decoding["scored"] == "token by token" and decoding["steps"] == 16 and decoding["rows_per_step"] == 2
    assert decoding["val_loss"] == pytest.approx(from_disk["metrics"]["val_loss"], rel=1e-5)
    assert 0 < decoding["hit_rate"] < 1 and decoding["disk_bytes_per_step"] > 0


@pytest.mark.parametrize("options, fragments", [
    (["save_predictors=P"], ["save_predictors needs predictor_rank > 0"]),
    (["predictor_rank=2", "save_predictors=NODIR"], ["no such directory"]),
    (["--decoder", "sparse", "--decoder-options", "{active: predictor, predictors: OTHER}"],
     ["predictors for a model of 3 layers, width 64", "this model has 2 layers, width 32"]),
    (["--decoder-options", "{active: relu}"], ["--decoder-options needs --decoder"]),
    (["--decoder", "sparse", "--decoder-options", "{active: relu, bundle: BUNDLE, dram_cap: 100000}"],
     ["relu_stats records the dense FFN's activations", "released the model's FFN weights",
      "hint: add keep_model_ffn: true"]),
])
def test_bad_relu_stats_options_are_one_line_and_write_nothing(relu_run, sparse_files, tmp_path, capsys, options,
                                                                fragments):
    from plugins.sparse.evaluator import fit_predictors
    from plugins.sparse.predictor import PredictorConfig
    from plugins.sparse.predictor_file import save_predictors

    from sparse_models import prompt, tiny_openelm

    other = tiny_openelm(ffn_activation="relu")
    save_predictors(fit_predictors(other, prompt(8), PredictorConfig(rank=2, steps=1)), other, "x",
                    tmp_path / "other.safetensors")
    options = [option.replace("NODIR", str(tmp_path / "none" / "p.safetensors"))
               .replace("OTHER", str(tmp_path / "other.safetensors")).replace("=P", f"={tmp_path / 'p.safetensors'}")
               .replace("BUNDLE", str(sparse_files[0]))
               for option in options]
    output = tmp_path / "eval"
    code = run_cli(eval_main, ["relu_stats", "--model", str(relu_run), "--output", str(output), *options])
    assert_error_output(code, capsys.readouterr().err, *fragments)
    assert not output.exists() and not (tmp_path / "p.safetensors").exists()


def test_an_evaluator_whose_handle_holds_no_network_cannot_take_a_decoder():
    from types import SimpleNamespace

    from toolkit.cli.eval import apply_decoder
    from toolkit.evaluation import EvaluationError

    with pytest.raises(EvaluationError, match="evaluator 'gsm_symbolic' scores models that cannot take --decoder"):
        apply_decoder(SimpleNamespace(model="not a network"), "gsm_symbolic", "sparse", "{}")
