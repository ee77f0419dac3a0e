"""`toolkit-export --format hf`'s output: a Hugging Face directory that stands alone.

    config.json                          Apple's OpenELM keys + `auto_map` naming the two files below
    model.safetensors                    the checkpoint's tensors (`transformer.` names)
    configuration_toolkit_openelm.py     modelling code of our own (torch + transformers only), so
    modeling_toolkit_openelm.py          AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True) works
    tokenizer.model                      the SentencePiece model the run trained with, or
    tokenizer.json                       the run's Hugging Face tokenizer (a SmolLM2 import's, say)
    tokenizer_config.json                how transformers wraps it (LlamaTokenizer for a SentencePiece
                                         model, PreTrainedTokenizerFast for a tokenizer.json)
    special_tokens_map.json, generation_config.json

With `layout="llama"` (`--format hf-llama`) the directory is transformers' own Llama layout
instead (config.json of a LlamaForCausalLM, model.safetensors under Llama's names, no code) with
the same tokenizer files: for models that are Llamas (plugins/openelm/llama.py).

The toolkit starts every document after an end-of-text token, so the tokenizer config declares
that token (`</s>` of a SentencePiece model) as the one put before a text: `tokenizer(prompt)` in
transformers gives the ids `toolkit-generate` feeds the model, and greedy continuations agree. A
tokenizer.json gets that rule as a post-processor of its own (transformers' fast tokenizers take
it from the file, not from the config), after whatever post-processor it had. `toolkit-generate`
and `toolkit-eval` read the same directory through the `openelm-hf` importer with the same
tokenizer file. The directory appears only once every file is complete: it is assembled under
a temporary name beside the target, then renamed.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plugins.lm.tokenizer_files import JSON_FILE, RUN_TOKENIZER_FILES, trained_tokenizer_file
from plugins.openelm.convert import CONFIG_FILE, write_hf
from plugins.openelm.model import OpenELM
from toolkit.checkpoint import SINGLE_MODEL, trained_weights
from toolkit.errors import CheckpointError
from toolkit.files import atomic_path

TOKENIZER_FILE = "tokenizer.model"
CODE_DIRECTORY = Path(__file__).with_name("hf_code")
CONFIGURATION_MODULE = "configuration_toolkit_openelm"
MODELING_MODULE = "modeling_toolkit_openelm"
AUTO_MAP = {
    "AutoConfig": f"{CONFIGURATION_MODULE}.ToolkitOpenELMConfig",
    "AutoModelForCausalLM": f"{MODELING_MODULE}.ToolkitOpenELMForCausalLM",
}
EXPORT_FILES = (CONFIG_FILE, "model.safetensors", f"{CONFIGURATION_MODULE}.py", f"{MODELING_MODULE}.py",
                TOKENIZER_FILE, "tokenizer_config.json", "special_tokens_map.json", "generation_config.json")


def export_files(tokenizer_path: Path) -> tuple[str, ...]:
    """The files an export holds, with the tokenizer file `tokenizer_path` (.json or SentencePiece)."""
    if not is_json_tokenizer(tokenizer_path):
        return EXPORT_FILES
    return tuple(JSON_FILE if name == TOKENIZER_FILE else name for name in EXPORT_FILES)


def is_json_tokenizer(path: Path) -> bool:
    return Path(path).suffix == ".json"  # as the loaders decide (plugins.lm.tokenizer_files)


def find_run_tokenizer(checkpoint_dir: Path, run_dir: Path, recipe: dict[str, Any]) -> Path:
    """The tokenizer a run trained with: its copy in the checkpoint or run directory (tokenizer.model
    or tokenizer.json), else the recipe's `data.tokenizer`."""
    found = trained_tokenizer_file([checkpoint_dir, run_dir], recipe)
    if found is not None:
        return found
    raise CheckpointError(f"{run_dir}: no {' or '.join(RUN_TOKENIZER_FILES)} in the run directory and the recipe "
                          "names no data.tokenizer", hint="pass --tokenizer with the tokenizer file the run was "
                                                          "trained with (a SentencePiece .model or a tokenizer.json)")


@dataclass(frozen=True)
class SpecialTokens:
    """The pieces transformers needs named: end-of-text (also the document start) and unknown."""

    eos: str
    eos_id: int
    unk: str | None


def special_tokens(tokenizer_path: Path, model_vocab_size: int) -> SpecialTokens:
    """The special pieces of a SentencePiece model or a tokenizer.json, checked to fit the model's vocabulary."""
    if is_json_tokenizer(tokenizer_path):
        return _json_special_tokens(tokenizer_path, model_vocab_size)
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor()
    try:
        processor.load(str(tokenizer_path))
    except (OSError, RuntimeError) as error:
        raise CheckpointError(f"{tokenizer_path}: not a SentencePiece model "
                              f"({str(error).splitlines()[0] if str(error) else 'unreadable'})") from error
    if processor.get_piece_size() > model_vocab_size:
        raise CheckpointError(f"{tokenizer_path}: {processor.get_piece_size()} tokens, more than the model's "
                              f"vocab_size {model_vocab_size}", hint="export with the tokenizer the run trained with")
    if processor.eos_id() < 0:
        raise CheckpointError(f"{tokenizer_path}: the tokenizer has no end-of-sequence token")
    unk = processor.id_to_piece(processor.unk_id()) if processor.unk_id() >= 0 else None
    return SpecialTokens(processor.id_to_piece(processor.eos_id()), processor.eos_id(), unk)


def _json_special_tokens(tokenizer_path: Path, model_vocab_size: int) -> SpecialTokens:
    """The end-of-text token of a tokenizer.json, as the toolkit reads it (plugins.lm.json_tokenizer)."""
    from plugins.lm.json_tokenizer import load_json_tokenizer

    tokenizer = load_json_tokenizer(tokenizer_path)  # DataError (one line) when it is not one
    if tokenizer.vocab_size > model_vocab_size:
        raise CheckpointError(f"{tokenizer_path}: {tokenizer.vocab_size} tokens, more than the model's "
                              f"vocab_size {model_vocab_size}", hint="export with the tokenizer the run trained with")
    if tokenizer.eos_id < 0:
        raise CheckpointError(f"{tokenizer_path}: the tokenizer has no end-of-sequence token",
                              hint="name one as eos_token in a tokenizer_config.json beside it")
    return SpecialTokens(tokenizer.backend.id_to_token(tokenizer.eos_id), tokenizer.eos_id, None)


def text_start_tokenizer(tokenizer_path: Path, tokens: SpecialTokens) -> str:
    """The tokenizer.json at `tokenizer_path` (its JSON text) with a post-processor that puts the
    end-of-text token before every text, after the post-processor it had (if any)."""
    from tokenizers import Tokenizer, processors

    backend = Tokenizer.from_file(str(tokenizer_path))
    eos = tokens.eos
    start = processors.TemplateProcessing(single=f"{eos} $A", pair=f"{eos} $A {eos} $B:1",
                                          special_tokens=[(eos, tokens.eos_id)])
    backend.post_processor = start if backend.post_processor is None else processors.Sequence(
        [backend.post_processor, start])
    return backend.to_str(pretty=True)


def tokenizer_files(tokens: SpecialTokens, context_length: int,
                    json_tokenizer: bool = False) -> dict[str, dict[str, Any]]:
    """tokenizer_config.json, special_tokens_map.json and generation_config.json for transformers."""
    eos, eos_id = tokens.eos, tokens.eos_id
    special = {"bos_token": eos, "eos_token": eos, "pad_token": eos, **({"unk_token": tokens.unk} if tokens.unk else {})}
    common = {"clean_up_tokenization_spaces": False, "model_max_length": context_length, "padding_side": "left",
              **special}
    if json_tokenizer:  # the start token comes from the file's post-processor (text_start_tokenizer)
        tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", **common}
    else:
        tokenizer_config = {
            "tokenizer_class": "LlamaTokenizer",  # the SentencePiece-backed class transformers knows
            # Documents start after the end-of-text token in training: transformers puts it before a text.
            "add_bos_token": True,
            "add_eos_token": False,
            "add_prefix_space": False,
            "legacy": False,
            **common,
        }
    generation = {"bos_token_id": eos_id, "eos_token_id": eos_id, "pad_token_id": eos_id, "do_sample": False}
    return {"tokenizer_config.json": tokenizer_config, "special_tokens_map.json": special,
            "generation_config.json": generation}


def _write_json(path: Path, value: dict[str, Any]) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


def _write_tokenizer(directory: Path, tokenizer: Path, tokens: SpecialTokens, context_length: int) -> None:
    """The tokenizer file and transformers' tokenizer and generation configs, into `directory`."""
    json_tokenizer = is_json_tokenizer(tokenizer)
    if json_tokenizer:
        (directory / JSON_FILE).write_text(text_start_tokenizer(tokenizer, tokens))
    else:
        shutil.copyfile(tokenizer, directory / TOKENIZER_FILE)
    for name, value in tokenizer_files(tokens, context_length, json_tokenizer).items():
        _write_json(directory / name, value)


def _complete(directory: Path, tokenizer: Path, tokens: SpecialTokens, context_length: int) -> None:
    """Add auto_map, the modelling code and the tokenizer files to a directory write_hf produced."""
    config = json.loads((directory / CONFIG_FILE).read_text())
    config.update(auto_map=AUTO_MAP, bos_token_id=tokens.eos_id, eos_token_id=tokens.eos_id)
    _write_json(directory / CONFIG_FILE, config)
    for module in (CONFIGURATION_MODULE, MODELING_MODULE):
        shutil.copyfile(CODE_DIRECTORY / f"{module}.py", directory / f"{module}.py")
    _write_tokenizer(directory, tokenizer, tokens, context_length)


def _write_llama(directory: Path, config, state: dict, tokens: SpecialTokens, source: Path) -> None:
    """config.json and model.safetensors in transformers' Llama layout (plugins/openelm/llama.py)."""
    from safetensors.torch import save_file

    from plugins.openelm.convert import SAFETENSORS_FILE, _dtype_name
    from plugins.openelm.llama import config_to_llama, state_to_llama

    tensors = state_to_llama(state, config, source)
    save_file(tensors, str(directory / SAFETENSORS_FILE), metadata={"format": "pt"})
    _write_json(directory / CONFIG_FILE, config_to_llama(config, _dtype_name(tensors), tokens.eos_id))


def export_hf(checkpoint_or_run_dir: str | Path, out_dir: str | Path, registries=None,
              tokenizer: str | Path | None = None, layout: str = "openelm") -> Path:
    """Export a toolkit OpenELM checkpoint (or a run's latest) as a stand-alone HF directory `out_dir`.

    `layout` "openelm": Apple's OpenELM layout with our modelling code (any OpenELM); "llama":
    transformers' own LlamaForCausalLM layout, no code shipped, for the models that are Llamas
    (uniform widths, no Q/K norm: a SmolLM2 import and what is trained from it).

    `load_model` checks the recipe's model and that the weights fit it; the tensors written are the
    checkpoint file's own (same dtype and bits), not the model's float32 copies of them.
    `tokenizer` replaces the run's own tokenizer file (tokenizer.model or tokenizer.json).
    """
    from toolkit.checkpoint import load_model

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise CheckpointError(f"{out_dir}: already exists and is not an empty directory")
    loaded = load_model(checkpoint_or_run_dir, registries=registries)
    if not isinstance(loaded.model, OpenELM):
        name = (loaded.recipe.get("model") or {}).get("name")
        raise CheckpointError(f"{loaded.checkpoint_dir}: model {name!r} is {type(loaded.model).__name__}, "
                              f"not OpenELM; only OpenELM models export to the Hugging Face layout")
    config = loaded.model.config
    if layout == "llama":
        from plugins.openelm.llama import check_llama_exportable

        check_llama_exportable(config, loaded.checkpoint_dir)
    elif layout != "openelm":
        raise ValueError(f"layout must be openelm or llama, got {layout!r}")
    if config.ffn_activation != "silu" or config.relu_after_norm:
        raise CheckpointError(f"{loaded.checkpoint_dir}: a relufied model (ffn_activation {config.ffn_activation}, "
                              f"relu_after_norm {config.relu_after_norm}) has no Hugging Face OpenELM equivalent")
    if tokenizer is not None and not Path(tokenizer).is_file():
        raise CheckpointError(f"--tokenizer {tokenizer}: no such file")
    tokenizer_path = Path(tokenizer) if tokenizer else find_run_tokenizer(
        loaded.checkpoint_dir, loaded.run_dir, loaded.recipe)
    tokens = special_tokens(tokenizer_path, config.vocab_size)
    _, state = trained_weights(loaded.checkpoint_dir, loaded.recipe, SINGLE_MODEL)  # full or sharded
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # atomic_path renames the finished staging directory onto `out_dir` (empty, checked above) with
    # the umask's permissions (safetensors writes 0600) and everything fsynced; on failure nothing
    # is left behind.
    with atomic_path(out_dir) as staging:
        if layout == "llama":
            staging.mkdir()
            _write_llama(staging, config, state, tokens, loaded.checkpoint_dir)
            _write_tokenizer(staging, tokenizer_path, tokens, config.max_context_length)
        else:
            write_hf(config, state, staging)
            _complete(staging, tokenizer_path, tokens, config.max_context_length)
    return out_dir
