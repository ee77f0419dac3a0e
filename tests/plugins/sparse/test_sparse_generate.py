"""`toolkit-generate --decoder sparse`: the sparse paths give dense decoding's greedy text, and
bad option combinations are one line.

The relu path (true pattern) computes each token's exact FFN to float tolerance, in DRAM and from
a bundle under a DRAM cap of three quarters of the FFN weights (a layer here may use more
than cap its neurons at once: random weights barely trained), so greedy decoding must produce the dense
text; the predictor path runs on a predictor file fitted to the run.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from plugins.lm import generate_cli
from plugins.lm.loading import load_language_model
from plugins.sparse.evaluator import fit_predictors
from plugins.sparse.predictor import PredictorConfig
from plugins.sparse.predictor_file import save_predictors
from toolkit.cli.common import run_cli

from helpers import assert_error_output


def generate(run, capsys, *arguments: str) -> tuple[str, str]:
    code = run_cli(generate_cli.run, [str(run), "--prompt", "ROMEO:", "--max-new-tokens", "8", "--temperature", "0",
                                      *arguments])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out, captured.err


def test_relu_path_in_dram_and_from_disk_gives_the_dense_greedy_text(relu_run, sparse_files, capsys):
    bundle, _, cap = sparse_files
    dense, dense_err = generate(relu_run, capsys)
    assert "sparse decoding" not in dense_err
    relu, relu_err = generate(relu_run, capsys, "--decoder", "sparse", "--decoder-options", "{active: relu}")
    assert relu == dense and len(dense) > len("ROMEO:\n")
    line = relu_err.strip().splitlines()[-1]
    # 3 prompt tokens (end-of-text, then the prompt's two) go as one prefill; then 7 one-token steps
    assert line.startswith("sparse decoding (active=relu (oracle: reads every gate row), FFN weights in DRAM, "
                           "one-token steps by the fused gather (numba)); 7 one-token steps in ")
    assert "tokens/s; FFN weights used per token " in line and "cache hit rate" not in line
    assert line.endswith("; 3 tokens run as whole sequences (a prefill, or scoring), each token with its own active set")
    gathered, gathered_err = generate(relu_run, capsys, "--decoder", "sparse", "--decoder-options",
                                      "{active: relu, kernel: torch}")
    assert gathered == dense and "FFN weights in DRAM, one-token steps by the torch gather); 7 one-token steps" in gathered_err
    disk, disk_err = generate(relu_run, capsys, "--decoder", "sparse", "--decoder-options",
                              f"{{active: relu, bundle: {bundle}, dram_cap: {cap}, window: 3}}")
    assert disk == dense
    assert f"warning: --decoder-options: dram_cap {cap} holds 98 neurons, fewer than layer 1's 128" in disk_err
    line = disk_err.strip().splitlines()[-1]
    assert f"FFN weights from {bundle} under a {cap}-byte DRAM cap, window 3, the model's own FFN weights " \
           "released (0.0" in line  # the gate rows stay: the relu oracle reads them
    assert ", one-token steps by the fused kernel on the cache's slots (numba)); " in line
    assert "read from disk per token" in line and "cache hit rate 0." in line
    assert "cost model: " in line and "tokens/s for the weight fetch" in line
    coalesced, coalesced_err = generate(relu_run, capsys, "--decoder", "sparse", "--decoder-options",
                                        f"{{active: relu, bundle: {bundle}, dram_cap: {cap}, window: 3, "
                                        "coalesce_gap_bytes: 100000}")
    assert coalesced == dense and "read from disk per token" in coalesced_err
    gathered, gathered_err = generate(relu_run, capsys, "--decoder", "sparse", "--decoder-options",
                                      f"{{active: relu, bundle: {bundle}, dram_cap: {cap}, kernel: torch}}")
    assert gathered == dense and ", one-token steps by the torch gather); " in gathered_err


def test_predictor_path_decodes_with_a_predictor_file(relu_run, sparse_files, capsys):
    bundle, predictors, cap = sparse_files
    # barely trained, the predictors call most neurons active: a cap holding every neuron
    text, err = generate(relu_run, capsys, "--decoder", "sparse", "--decoder-options",
                         f"{{active: predictor, predictors: {predictors}, bundle: {bundle}, dram_cap: {2 * cap}}}")
    assert text.startswith("ROMEO:")
    assert f"sparse decoding (active=predictor {predictors} (rank 4, threshold 0.3), FFN weights from" in err
    assert "warning" not in err  # fitted to this very run
    fused, fused_err = generate(relu_run, capsys, "--decoder", "sparse", "--decoder-options",
                                f"{{active: predictor, predictors: {predictors}}}")
    gathered, _ = generate(relu_run, capsys, "--decoder", "sparse", "--decoder-options",
                           f"{{active: predictor, predictors: {predictors}, kernel: torch}}")
    assert fused == gathered and "one-token steps by the fused gather (numba)); 7 one-token steps" in fused_err


def test_from_a_bundle_the_predictors_run_compiled_with_the_kernel_on_the_slots(relu_run, sparse_files):
    pytest.importorskip("numba")
    from plugins.sparse.decoder import SparseDecodingConfig, build_sparse_decoder
    from plugins.sparse.fused_ffn import FusedPredictedPattern

    bundle, predictors, cap = sparse_files
    for kernel, compiled in (("auto", True), ("torch", False)):
        model = load_language_model(str(relu_run), "cpu").model
        config = SparseDecodingConfig(active="predictor", predictors=str(predictors), bundle=str(bundle),
                                      dram_cap=2 * cap, kernel=kernel)
        decoder = build_sparse_decoder(config, model)
        assert isinstance(decoder.source, FusedPredictedPattern) is compiled
        assert decoder.sparse_ffn.reads_slots is compiled
        decoder.neuron_cache.close()
        decoder.neuron_cache.reader.close()


def test_a_predictor_file_for_another_model_shape_is_one_line(relu_run, tmp_path, capsys):
    from sparse_models import tiny_openelm

    other = tiny_openelm(ffn_activation="relu")  # 3 layers, width 64: not the run's shape
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    path = tmp_path / "other.safetensors"
    save_predictors(fit_predictors(other, ids, PredictorConfig(rank=2, steps=1)), other, "elsewhere", path)
    code = run_cli(generate_cli.run, [str(relu_run), "--max-new-tokens", "2", "--decoder", "sparse",
                                      "--decoder-options", f"{{active: predictor, predictors: {path}}}"])
    captured = capsys.readouterr()
    assert_error_output(code, captured.err, f"{path}: predictors for a model of 3 layers, width 64",
                        "this model has 2 layers, width 32", "trained for elsewhere")
    assert captured.out == ""


def silu_copy(run, tmp_path):
    """The same run with its recipe saying silu: a model that was never relufied."""
    copy = tmp_path / "silu-run"
    shutil.copytree(run, copy)
    for recipe in copy.rglob("recipe.yaml"):
        text = recipe.read_text()
        assert "ffn_activation: relu" in text
        recipe.write_text(text.replace("ffn_activation: relu", "ffn_activation: silu"))
    return copy


@pytest.mark.parametrize("options, fragments", [
    ("{active: predictor}", ["--decoder-options: active: predictor needs predictors: PATH"]),
    ("{active: relu, bundle: BUNDLE, dram_cap: 0}", ["bundle: PATH needs dram_cap: BYTES >= 1", "got 0"]),
    ("{dram_cap: 1000}", ["dram_cap caps the cache", "give bundle: PATH too"]),
    ("{active: all, bundle: BUNDLE, dram_cap: 1000}", ["active: all runs the dense FFN"]),
    ("{active: sometimes}", ["active must be one of relu, predictor, all, got 'sometimes'"]),
    ("{activ: relu}", ["--decoder-options", "activ"]),
    ("{active: relu, bundle: MISSING, dram_cap: 1000}", ["cannot open FFN bundle"]),
    ("{active: relu, bundle: BUNDLE, dram_cap: 10}", ["a cap of 10 bytes holds no neuron"]),
    ("[relu]", ["--decoder-options: '[relu]' is not a mapping"]),
    ("{kernel: fast}", ["kernel must be one of auto, fused, torch, got 'fast'"]),
    ("{active: relu, coalesce_gap_bytes: 4096}", ["coalesce_gap_bytes must be >= 0 and needs bundle: PATH", "got 4096"]),
    ("{active: relu, keep_model_ffn: true}", ["keep_model_ffn goes with bundle: PATH"]),
    ("{active: all, kernel: fused}", ["kernel: fused computes the active neurons", "active: relu or predictor"]),
])
def test_bad_sparse_options_are_one_line(relu_run, sparse_files, tmp_path, capsys, options, fragments):
    options = options.replace("MISSING", str(tmp_path / "none.bundle")).replace("BUNDLE", str(sparse_files[0]))
    code = run_cli(generate_cli.run, [str(relu_run), "--max-new-tokens", "2", "--decoder", "sparse",
                                      "--decoder-options", options])
    captured = capsys.readouterr()
    assert_error_output(code, captured.err, *fragments)
    assert captured.out == ""


def test_kernel_fused_without_numba_is_one_line(relu_run, capsys, monkeypatch):
    from plugins.sparse import fused_ffn

    monkeypatch.setattr(fused_ffn, "numba", None)  # as on a machine without the `sparse` extra
    code = run_cli(generate_cli.run, [str(relu_run), "--max-new-tokens", "2", "--decoder", "sparse",
                                      "--decoder-options", "{active: relu, kernel: fused}"])
    captured = capsys.readouterr()
    assert_error_output(code, captured.err, "--decoder-options: kernel: fused cannot run: numba is not installed",
                        "pip install 'toolkit[sparse]'")
    assert captured.out == ""
    text, err = generate(relu_run, capsys, "--decoder", "sparse", "--decoder-options", "{active: relu}")
    assert "one-token steps by the torch gather" in err  # auto falls back without numba


def test_a_model_that_is_not_relufied_is_refused_for_the_relu_path(relu_run, tmp_path, capsys):
    code = run_cli(generate_cli.run, [str(silu_copy(relu_run, tmp_path)), "--decoder", "sparse"])
    captured = capsys.readouterr()
    assert_error_output(code, captured.err, "active: relu needs a relufied model", "uses silu",
                        "sparse/relufy_tiny.yaml")
    assert captured.out == ""


def test_a_bundle_of_other_weights_is_refused(relu_run, sparse_files, tmp_path, capsys):
    model = load_language_model(str(relu_run), "cpu").model
    with torch.no_grad():
        model.layers[1].ffn.proj_2.weight.add_(1.0)
    from plugins.sparse.bundle import write_bundle as write

    write(model, tmp_path / "other.bundle")
    code = run_cli(generate_cli.run, [str(relu_run), "--decoder", "sparse", "--decoder-options",
                                      f"{{bundle: {tmp_path / 'other.bundle'}, dram_cap: {sparse_files[2]}}}"])
    assert_error_output(code, capsys.readouterr().err, "layer 1 holds other FFN weights than the model's",
                        "plugins.sparse.write_bundle")


def test_decoder_arguments_alone_are_one_line(relu_run, capsys):
    code = run_cli(generate_cli.run, [str(relu_run), "--decoder-options", "{active: relu}"])
    assert_error_output(code, capsys.readouterr().err, "--decoder-options needs --decoder")
    code = run_cli(generate_cli.run, [str(relu_run), "--decoder", "sparce"])
    assert_error_output(code, capsys.readouterr().err, "unknown decoder 'sparce'", "did you mean 'sparse'")
