"""`toolkit-generate`: continue a prompt with a trained language model.

    toolkit-generate runs/tiny --prompt "ROMEO:" --max-new-tokens 200 --temperature 0.8 --top-k 50

RUN_OR_CHECKPOINT_DIR is a run directory (its latest checkpoint is used) or one `step-NNNNNN/`;
`--model SPEC` also takes a Hugging Face model directory or a .gguf file (sampled and streamed
through transformers), and `--tokenizer` a tokenizer for models that ship none (HF OpenELM).
The tokenizer is the run's `tokenizer.model` (copied there at training time), else the recipe's
`data.tokenizer`. The prompt is given to the model after an end-of-text token, as a document start
looks in training, and sampling stops at the next end-of-text token. A routed model (Duo) decodes
with another router when asked: `--router fixed --router-options '{pattern: [big, small, skip]}'`; any
toolkit model decodes through a registered decoding path with `--decoder NAME --decoder-options YAML`
(toolkit.decoding; the sparse plugin's `sparse`), which prints one line of figures to stderr at the
end. The text is streamed to stdout as tokens are generated (with the model's KV cache when it has one).
"""

from __future__ import annotations

import argparse
import sys

import torch

from plugins.lm.sampling import generate
from plugins.lm.tokenizer import Tokenizer
from toolkit.cli.common import ArgumentParser, run_cli
from toolkit.decoding import build_decoder, check_decoder_arguments, decoding_report
from toolkit.errors import DataError


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="toolkit-generate", description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default=None, help="run directory or checkpoint directory")
    parser.add_argument("--model", default=None,
                        help="instead of PATH: also a Hugging Face model directory or a .gguf file")
    parser.add_argument("--tokenizer", default=None, help="tokenizer file for models that ship none (HF OpenELM)")
    parser.add_argument("--model-name", default=None,
                        help="which model of a run that trains several (an RL run's policy or value)")
    parser.add_argument("--prompt", default="", help="text to continue (default: start a new document)")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=50, help="0 = no top-k filter")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling; 1 = off")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    parser.add_argument("--router", default=None,
                        help="a routed (Duo) model only: decode with this router instead of the trained one")
    parser.add_argument("--router-options", default="{}",
                        help="that router's options as a YAML mapping, e.g. '{pattern: [big, small, skip]}'")
    parser.add_argument("--decoder", default=None,
                        help="decode through a registered decoding path (toolkit-plugins lists decoders), "
                             "e.g. sparse: only the active FFN neurons of a relufied OpenELM")
    parser.add_argument("--decoder-options", default="{}",
                        help="that decoder's options as a YAML mapping, e.g. '{active: predictor, predictors: p.safetensors}'")
    return parser.parse_args(argv)


def router_options(text: str) -> dict:
    """--router-options read as YAML the way recipe overrides are (one clear line when it is not a mapping)."""
    from toolkit.decoding import mapping_option

    return mapping_option("--router-options", text, "{pattern: [big, small]}")


def choose_router(model: torch.nn.Module, arguments: argparse.Namespace) -> None:
    """Swap in the router `--router` names (a model that routes has `route_with`)."""
    from toolkit.errors import RecipeError

    if arguments.router is None:
        if arguments.router_options != "{}":
            raise RecipeError("--router-options needs --router")
        return
    options = router_options(arguments.router_options)
    if not hasattr(model, "route_with"):
        raise RecipeError(f"--router: the model is {type(model).__name__}, which has no router")
    model.route_with(arguments.router, options, where="--router-options")


class TextStream:
    """Writes the decoded text as tokens arrive: the prompt at once, then each token's new characters.

    Prompt and continuation are always decoded together (pieces joining across the boundary stay
    intact) and only the characters beyond those already written go out. Text ending in an
    incomplete UTF-8 sequence (U+FFFD) is held back until the next token completes it.
    """

    def __init__(self, tokenizer: Tokenizer, prompt_ids: list[int], out) -> None:
        self.tokenizer, self.prompt_ids, self.out = tokenizer, list(prompt_ids), out
        self.new_ids: list[int] = []
        self.written = ""
        self.done = False
        self._emit(tokenizer.decode(self.prompt_ids), final=False)

    def _emit(self, text: str, final: bool) -> None:
        if not final:
            text = text.rstrip("\ufffd")
        if text.startswith(self.written) and len(text) > len(self.written):
            self.out.write(text[len(self.written):])
            self.out.flush()
            self.written = text

    def add(self, token_id: int) -> None:
        if self.done or token_id == self.tokenizer.eos_id:
            self.done = True
            return
        self.new_ids.append(token_id)
        self._emit(self.tokenizer.decode(self.prompt_ids + self.new_ids), final=False)

    def finish(self, new_ids: list[int]) -> None:
        """Writes whatever is left of the full text of prompt + `new_ids`, and a newline."""
        text = self.tokenizer.decode(self.prompt_ids + list(new_ids))
        self._emit(text, final=True)
        if not text.startswith(self.written):  # decoding was not prefix-stable: should not happen
            self.out.write("\n" + text)
        self.out.write("\n")
        self.out.flush()


def _generate_hugging_face(language_model, arguments: argparse.Namespace) -> None:
    """Sampling and streaming through transformers for HF / GGUF models."""
    from transformers import TextStreamer

    tokenizer = language_model.tokenizer
    prompt_ids = [*tokenizer.prefix_ids(), *tokenizer.encode(arguments.prompt)]
    input_ids = torch.tensor([prompt_ids], dtype=torch.long, device=language_model.device)  # [1, T]
    torch.manual_seed(arguments.seed)
    sampling = arguments.temperature > 0
    options = {"temperature": arguments.temperature, "top_k": arguments.top_k or None, "top_p": arguments.top_p} if sampling else {}
    language_model.model.generate(
        input_ids=input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=arguments.max_new_tokens,
        do_sample=sampling, pad_token_id=tokenizer.eos_id, eos_token_id=tokenizer.eos_id,
        streamer=TextStreamer(tokenizer.tokenizer, skip_special_tokens=True), **options,
    )


def check_vocabulary_sizes(language_model, spec: str) -> None:
    """Refuse a tokenizer with more pieces than the model has token rows: its ids beyond the
    model's rows have no embedding, and the text printed would be garbage. Fewer pieces is fine
    (CoreNet pads embeddings to a multiple of 64): every id the tokenizer makes fits."""
    with torch.no_grad():
        probe = torch.zeros((1, 1), dtype=torch.long, device=language_model.device)  # token 0 fits any model
        model_rows = int(language_model.model(probe).shape[-1])  # [1, 1, V] -> V
    tokenizer = language_model.tokenizer
    if tokenizer.vocab_size > model_rows:
        where = language_model.identity or spec
        raise DataError(f"tokenizer {tokenizer.path} has {tokenizer.vocab_size} pieces but the model in {where} "
                        f"has {model_rows} token rows",
                        hint="use the tokenizer the model was trained with (--tokenizer FILE)")


def run(argv: list[str]) -> int:
    arguments = parse_arguments(argv)
    from plugins.lm.language_model import LanguageModel  # heavy, so only once the arguments parse
    from plugins.lm.loading import load_language_model

    spec = arguments.model or arguments.path
    check_decoder_arguments(arguments.decoder, arguments.decoder_options)
    if not spec or (arguments.model and arguments.path):
        raise DataError("give the model either as PATH or as --model SPEC (exactly one)")
    device = arguments.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    language_model = load_language_model(spec, device, arguments.tokenizer, arguments.model_name)
    if not isinstance(language_model, LanguageModel):
        if arguments.decoder is not None:
            raise DataError(f"--decoder: {spec} is served through transformers; decoders take toolkit models")
        _generate_hugging_face(language_model, arguments)
        return 0
    choose_router(language_model.model, arguments)
    check_vocabulary_sizes(language_model, spec)
    if arguments.decoder is not None:  # after the vocabulary probe, so the decoder counts generated tokens only
        language_model.model = build_decoder(arguments.decoder, arguments.decoder_options, language_model.model)
    tokenizer = language_model.tokenizer
    prompt_ids = [tokenizer.eos_id, *tokenizer.encode(arguments.prompt)]
    model_device = language_model.device
    input_ids = torch.tensor([prompt_ids], dtype=torch.long, device=model_device)  # [1, T]
    generator = torch.Generator(device=model_device).manual_seed(arguments.seed)
    stream = TextStream(tokenizer, prompt_ids[1:], sys.stdout)
    output = generate(
        language_model.model,
        input_ids,
        max_new_tokens=arguments.max_new_tokens,
        temperature=arguments.temperature,
        top_k=arguments.top_k or None,
        top_p=arguments.top_p if arguments.top_p < 1.0 else None,
        eos_id=tokenizer.eos_id,
        generator=generator,
        on_tokens=lambda next_ids: stream.add(int(next_ids[0])),
    )[0].tolist()
    new_ids = output[len(prompt_ids):]
    if tokenizer.eos_id in new_ids:
        new_ids = new_ids[:new_ids.index(tokenizer.eos_id)]
    stream.finish(new_ids)
    report = decoding_report(language_model.model)
    if report:
        print(report, file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_cli(run, argv))


if __name__ == "__main__":
    main()
