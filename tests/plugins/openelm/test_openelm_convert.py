"""OpenELM checkpoints in and out: HF config.json and key layout, CoreNet .pt, `toolkit-export`."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import stat
import pickle

import pytest
import torch
import yaml
from helpers import assert_error_output, assert_one_line_error, assert_unchanged, run_command, snapshot
from safetensors.torch import load_file, save_file

from plugins.openelm import export_cli
from plugins.openelm.config import PRESETS, OpenELMConfig
from plugins.openelm.convert import (
    config_from_hf,
    config_to_hf,
    import_openelm,
    load_corenet_pt,
    state_from_hf,
    state_to_hf,
)
from plugins.openelm.hf_export import EXPORT_FILES, export_hf
from plugins.openelm.model import OpenELM
from toolkit.engine.checkpoint import CheckpointContent, save_checkpoint
from toolkit.errors import CheckpointError

TINY = {"vocab_size": 97, "max_context_length": 32, "num_layers": 3, "model_dim": 64, "head_dim": 16,
        "num_gqa_groups": 2, "ffn_dim_divisor": 32}

# apple/OpenELM-1_1B's config.json (the fields that decide the architecture).
OPENELM_1_1B_JSON = {
    "architectures": ["OpenELMForCausalLM"], "model_type": "openelm", "activation_fn_name": "swish",
    "ffn_dim_divisor": 256, "ffn_with_glu": True, "head_dim": 64, "initializer_range": 0.02,
    "max_context_length": 2048, "model_dim": 2048, "normalization_layer_name": "rms_norm",
    "normalize_qk_projections": True, "num_gqa_groups": 4, "num_transformer_layers": 28,
    "ffn_multipliers": [0.5, 0.63, 0.76, 0.89, 1.02, 1.15, 1.28, 1.41, 1.54, 1.67, 1.8, 1.93, 2.06, 2.19, 2.31,
                        2.44, 2.57, 2.7, 2.83, 2.96, 3.09, 3.22, 3.35, 3.48, 3.61, 3.74, 3.87, 4.0],
    "num_kv_heads": [4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 8, 8, 8, 8],
    "num_query_heads": [16, 16, 16, 20, 20, 20, 20, 20, 20, 20, 24, 24, 24, 24, 24, 24, 24, 24, 28, 28, 28, 28,
                        28, 28, 32, 32, 32, 32],
    "qkv_multipliers": [0.5, 1.0], "rope_freq_constant": 10000, "rope_max_length": 4096,
    "share_input_output_layers": True, "vocab_size": 32000,
}


def same_config(a: OpenELMConfig, b: OpenELMConfig) -> bool:
    return dataclasses.asdict(a) == dataclasses.asdict(b)


def tiny_model(seed: int = 0, **overrides) -> OpenELM:
    torch.manual_seed(seed)
    return OpenELM(OpenELMConfig(**{**TINY, **overrides}))


@functools.cache
def tiny_tokenizer_bytes() -> bytes:
    """A 60-piece SentencePiece model (fits TINY's 97-token vocabulary), trained once."""
    import io

    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(["the cat sat on the mat", "a dog ran to the park", "birds sing at dawn"] * 20),
        model_writer=model, vocab_size=60, model_type="bpe", hard_vocab_limit=False, minloglevel=2)
    return model.getvalue()


def make_run(tmp_path, model: torch.nn.Module, model_section: dict):
    run = tmp_path / "run"
    run.mkdir()
    content = CheckpointContent(step=3, model=model.state_dict(), optimizer={}, scheduler={},
                                     trainer_state={"step": 3}, recipe_yaml=yaml.safe_dump({"model": model_section}))
    save_checkpoint(run, content, keep_last=1)
    (run / "tokenizer.model").write_bytes(tiny_tokenizer_bytes())  # what training copies into a run
    return run


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key, tensor in a.items():
        assert tensor.dtype == b[key].dtype and torch.equal(tensor, b[key]), key


# --- layout and configs --------------------------------------------------------------------------


def test_270M_export_has_apple_key_names_and_shapes():
    config = PRESETS["openelm-270M"]()
    with torch.device("meta"):
        model = OpenELM(config)
    state = state_to_hf(model.state_dict(), config.tie_embeddings)
    assert state["transformer.layers.0.attn.qkv_proj.weight"].shape == (1152, 1280)
    assert state["transformer.layers.0.attn.out_proj.weight"].shape == (1280, 768)
    assert state["transformer.layers.0.attn.q_norm.weight"].shape == (64,)
    assert state["transformer.layers.0.ffn.proj_1.weight"].shape == (2 * 768, 1280)
    assert state["transformer.layers.15.ffn.proj_2.weight"].shape == (1280, 5120)
    assert state["transformer.token_embeddings.weight"].shape == (32000, 1280)
    assert state["transformer.norm.weight"].shape == (1280,)
    assert not any("lm_head" in key or "rope" in key for key in state)
    per_layer = ("attn_norm", "attn.qkv_proj", "attn.q_norm", "attn.k_norm", "attn.out_proj", "ffn_norm",
                 "ffn.proj_1", "ffn.proj_2")
    expected = {f"transformer.layers.{i}.{name}.weight" for i in range(16) for name in per_layer}
    assert set(state) == expected | {"transformer.token_embeddings.weight", "transformer.norm.weight"}
    hf = config_to_hf(config)
    assert hf["num_query_heads"] == [12] * 5 + [16] * 7 + [20] * 4  # apple/OpenELM-270M
    assert hf["num_kv_heads"] == [3] * 5 + [4] * 7 + [5] * 4
    assert hf["model_type"] == "openelm" and hf["architectures"] == ["OpenELMForCausalLM"]
    assert hf["share_input_output_layers"] is True and hf["rope_max_length"] == 4096


@pytest.mark.parametrize("name", ["openelm-270M", "openelm-450M", "openelm-1_1B", "openelm-3B"])
def test_preset_configs_round_trip(name):
    config = PRESETS[name]()
    hf = json.loads(json.dumps(config_to_hf(config)))
    assert same_config(config_from_hf(hf), config)


def test_apples_real_1_1B_config_is_the_preset():
    assert same_config(config_from_hf(OPENELM_1_1B_JSON), PRESETS["openelm-1_1B"]())
    assert config_to_hf(PRESETS["openelm-1_1B"]())["ffn_multipliers"] == OPENELM_1_1B_JSON["ffn_multipliers"]


def test_uniform_override_config_round_trips_its_widths():
    config = OpenELMConfig(**{**TINY, "num_query_heads": 4, "num_kv_heads": 2, "ffn_dim": 100})
    back = config_from_hf(config_to_hf(config))
    assert back.layer_widths() == config.layer_widths()


def test_inexpressible_or_inconsistent_configs_are_refused():
    wrong_heads = dict(OPENELM_1_1B_JSON, num_query_heads=[16] * 28)
    with pytest.raises(CheckpointError, match="model/config.json: num_query_heads"):
        config_from_hf(wrong_heads, "model/config.json")
    # per-layer FFN multipliers off the linspace rule and not uniform: no OpenELMConfig says that
    odd = dict(OPENELM_1_1B_JSON, ffn_multipliers=[1.0, 2.0] * 14)
    with pytest.raises(CheckpointError, match="cannot express.*layer 1 ffn_dim: 4096 in config.json, 2048 in OpenELMConfig"):
        config_from_hf(odd, "model/config.json")
    with pytest.raises(CheckpointError, match="missing model_dim"):
        config_from_hf({k: v for k, v in OPENELM_1_1B_JSON.items() if k != "model_dim"})
    with pytest.raises(CheckpointError, match="norm_eps"):
        config_to_hf(OpenELMConfig(**{**TINY, "norm_eps": 1e-5}))


def test_state_renames_drop_buffers_and_tied_head():
    state = {"token_embeddings.weight": torch.ones(2), "lm_head.weight": torch.ones(2), "rope_cos": torch.ones(1)}
    assert set(state_to_hf(state, tie_embeddings=True)) == {"transformer.token_embeddings.weight"}
    untied = state_to_hf(state, tie_embeddings=False)
    assert set(untied) == {"transformer.token_embeddings.weight", "lm_head.weight"}
    assert set(state_from_hf(untied)) == {"token_embeddings.weight", "lm_head.weight"}


# --- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tied", [True, False])
def test_export_import_round_trip_is_bit_identical(tmp_path, tied):
    model = tiny_model(tie_embeddings=tied).to(torch.bfloat16)
    run = make_run(tmp_path, model, {"name": "openelm", **TINY, "tie_embeddings": tied})
    out = export_hf(run, tmp_path / "hf")
    assert sorted(p.name for p in out.iterdir()) == sorted(EXPORT_FILES)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    assert (out / "tokenizer.model").read_bytes() == tiny_tokenizer_bytes()
    raw = load_file(str(out / "model.safetensors"))
    assert ("lm_head.weight" in raw) is (not tied)
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    imported, config = import_openelm(out)
    assert same_config(config, model.config)
    assert_identical(imported.state_dict(), model.state_dict())
    tokens = torch.randint(0, 97, (1, 9))
    assert torch.equal(imported(tokens), model.eval()(tokens))


def test_export_refuses_a_non_empty_out_dir_and_a_non_openelm_model(tmp_path, monkeypatch):
    run = make_run(tmp_path, tiny_model(), {"name": "openelm", **TINY})
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError, match="not an empty directory"):
        export_hf(run, tmp_path / "taken")
    assert_unchanged(before, tmp_path)

    import toolkit.plugins
    from toolkit.registry import Registry

    registries = toolkit.plugins.Registries(kinds={kind: Registry(kind) for kind in toolkit.plugins.KINDS})
    registries["models"].add("linear", lambda config: torch.nn.Linear(2, 2), None, "tests")
    other = tmp_path / "other"
    other.mkdir()
    content = CheckpointContent(step=1, model=torch.nn.Linear(2, 2).state_dict(), optimizer={}, scheduler={},
                                     trainer_state={}, recipe_yaml=yaml.safe_dump({"model": {"name": "linear"}}))
    save_checkpoint(other, content, keep_last=1)
    with pytest.raises(CheckpointError, match="'linear' is Linear, not OpenELM"):
        export_hf(other, tmp_path / "out", registries=registries)
    assert not (tmp_path / "out").exists()


def test_sharded_safetensors_and_bin_directories_import(tmp_path):
    model = tiny_model()
    hf_state = state_to_hf(model.state_dict())
    config_json = config_to_hf(model.config)
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "config.json").write_text(json.dumps(config_json))
    keys = sorted(hf_state)
    weight_map = {}
    for index, part in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2:])):
        name = f"model-0000{index + 1}-of-00002.safetensors"
        save_file({k: hf_state[k].contiguous() for k in part}, str(sharded / name))
        weight_map.update({k: name for k in part})
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert_identical(import_openelm(sharded)[0].state_dict(), model.state_dict())

    binary = tmp_path / "bin"
    binary.mkdir()
    (binary / "config.json").write_text(json.dumps(config_json))
    torch.save(hf_state, binary / "pytorch_model.bin")
    assert_identical(import_openelm(binary)[0].state_dict(), model.state_dict())


def test_corenet_pt_imports_with_a_config(tmp_path):
    model = tiny_model()
    torch.save(model.state_dict(), tmp_path / "corenet.pt")
    assert_identical(load_corenet_pt(tmp_path / "corenet.pt"), model.state_dict())
    imported, _ = import_openelm(tmp_path / "corenet.pt", config=model.config)
    assert_identical(imported.state_dict(), model.state_dict())
    with pytest.raises(CheckpointError, match="needs an OpenELM config.json"):
        import_openelm(tmp_path / "corenet.pt")
    (tmp_path / "config.json").write_text(json.dumps(config_to_hf(model.config)))
    assert_identical(import_openelm(tmp_path / "corenet.pt")[0].state_dict(), model.state_dict())


def test_corenet_embedding_padding_is_trimmed_to_the_vocabulary(tmp_path):
    model = tiny_model()  # vocabulary 97
    state = model.state_dict()
    padding = torch.randn(128 - 97, state["token_embeddings.weight"].shape[1])
    torch.save({**state, "token_embeddings.weight": torch.cat([state["token_embeddings.weight"], padding])},
               tmp_path / "padded.pt")  # as CoreNet stores it: rows up to a multiple of 64
    imported, _ = import_openelm(tmp_path / "padded.pt", config=model.config)
    assert_identical(imported.state_dict(), state)
    torch.save({**state, "token_embeddings.weight": torch.randn(100, padding.shape[1])}, tmp_path / "wrong.pt")
    with pytest.raises(CheckpointError, match="token_embeddings.weight"):
        import_openelm(tmp_path / "wrong.pt", config=model.config)  # not padding: still refused


class Payload:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_objects_in_pytorch_model_bin_are_refused(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(config_to_hf(tiny_model().config)))
    with open(tmp_path / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"transformer.norm.weight": Payload()}, handle, protocol=2)
    with pytest.raises(CheckpointError, match="refused to load"):
        import_openelm(tmp_path)
    assert "pwned" not in capsys.readouterr().out


def test_shape_mismatch_names_file_key_and_both_shapes(tmp_path):
    model = tiny_model()
    state = state_to_hf(model.state_dict())
    state["transformer.norm.weight"] = torch.ones(65)
    (tmp_path / "config.json").write_text(json.dumps(config_to_hf(model.config)))
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError) as error:
        import_openelm(tmp_path)
    message = error.value.one_line()
    assert str(tmp_path / "model.safetensors") in message and "'norm.weight'" in message
    assert "(65,)" in message and "(64,)" in message


# --- the command ---------------------------------------------------------------------------------


def test_cli_exports_bit_identical_weights(tmp_path):
    model = tiny_model()
    run = make_run(tmp_path, model, {"name": "openelm", **TINY})
    result = run_command(["toolkit-export", "--format", "hf", str(run / "step-000003"), "--out", str(tmp_path / "hf")])
    assert result.returncode == 0, result.stderr
    imported, _ = import_openelm(tmp_path / "hf")
    assert_identical(imported.state_dict(), model.state_dict())


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_exported_files_get_the_permissions_the_umask_gives(tmp_path, mask):
    run = make_run(tmp_path, tiny_model(), {"name": "openelm", **TINY})
    saved = os.umask(mask)
    try:
        out = export_hf(run, tmp_path / "hf")
    finally:
        os.umask(saved)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~mask
    for name in ("config.json", "model.safetensors"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o666 & ~mask, name


def test_cli_refuses_a_directory_that_is_no_checkpoint(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    before = snapshot(tmp_path)
    result = run_command(["toolkit-export", "--format", "hf", str(empty), "--out", str(tmp_path / "o")])
    assert_one_line_error(result, str(empty), "not a checkpoint")
    assert_unchanged(before, tmp_path)


def export_in_process(capsys, *arguments) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        export_cli.main(list(arguments))
    return exit_info.value.code, capsys.readouterr().err


def test_cli_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    code, err = export_in_process(capsys, "--format", "hf", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert_error_output(code, err, "no such checkpoint", str(tmp_path / "nope"))
    run = make_run(tmp_path, tiny_model(), {"name": "openelm", **TINY, "model_dim": 32})  # weights of width 64
    before = snapshot(tmp_path)
    code, err = export_in_process(capsys, "--format", "hf", str(run), "--out", str(tmp_path / "o"))
    assert_error_output(code, err, "model.safetensors", "has shape")
    assert len(err.splitlines()) == 1
    assert_unchanged(before, tmp_path)
    (run / "step-000003" / "recipe.yaml").unlink()
    before = snapshot(tmp_path)
    code, err = export_in_process(capsys, "--format", "hf", str(run), "--out", str(tmp_path / "o"))
    assert_error_output(code, err, "missing recipe.yaml")
    code, err = export_in_process(capsys, "--format", "gguf", str(run), "--out", str(tmp_path / "o"))
    assert code == 2 and "invalid choice: 'gguf'" in err and "Traceback" not in err  # argparse's own line
    assert_unchanged(before, tmp_path)
