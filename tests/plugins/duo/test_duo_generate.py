"""`toolkit-generate --router` decodes a Duo run with another router.

All-big decoding of the Duo run is the greedy output of the plain OpenELM holding its big-FFN
weights; all-small is the Duo model's own all-small greedy output. (That a learned router decides
the same while decoding as in a full forward is tested in test_duo_routers.py.)
"""

from __future__ import annotations

import pytest
import torch

from plugins.lm import generate_cli
from plugins.lm.loading import load_language_model
from plugins.lm.sampling import generate
from plugins.openelm import OpenELM, OpenELMConfig
from toolkit.cli.common import run_cli

from duo_models import route_all
from helpers import assert_error_output

PROMPT = "ROMEO:"


def generated_text(run, capsys, *arguments: str) -> str:
    code = run_cli(generate_cli.run, [str(run), "--prompt", PROMPT, "--max-new-tokens", "8", "--temperature", "0",
                                      *arguments])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def greedy_text(model, tokenizer) -> str:
    prompt_ids = [tokenizer.eos_id, *tokenizer.encode(PROMPT)]
    output = generate(model, torch.tensor([prompt_ids]), 8, temperature=0.0, eos_id=tokenizer.eos_id)[0].tolist()
    new_ids = output[len(prompt_ids):]
    if tokenizer.eos_id in new_ids:
        new_ids = new_ids[:new_ids.index(tokenizer.eos_id)]
    return tokenizer.decode(prompt_ids[1:] + new_ids) + "\n"


def test_all_big_decoding_is_the_plain_models_greedy_output(tiny_run, capsys):
    all_big = generated_text(tiny_run, capsys, "--router", "fixed", "--router-options", "{pattern: [big, big]}")
    loaded = load_language_model(str(tiny_run), "cpu")
    duo = loaded.model
    config = {key: value for key, value in vars(duo.config).items()
              if key in OpenELMConfig.__dataclass_fields__}
    plain = OpenELM(OpenELMConfig(**config)).eval()
    missing = plain.load_state_dict(duo.state_dict(), strict=False)
    assert not missing.missing_keys
    assert all_big == greedy_text(plain, loaded.tokenizer)
    all_small = generated_text(tiny_run, capsys, "--router", "fixed", "--router-options", "{pattern: [small, small]}")
    assert all_small == greedy_text(route_all(duo, "small"), loaded.tokenizer)


@pytest.mark.parametrize("arguments, fragments", [
    (["--router", "fixed", "--router-options", "{pattern: [big]}"],
     ["--router-options", "the pattern has 1 layers, but the model has 2"]),
    (["--router", "fixed", "--router-options", "[big, big]"], ["--router-options", "is not a mapping"]),
    (["--router", "fixed", "--router-options", "{pattern:[big]}"], ["router_options", "not valid YAML"]),
    (["--router-options", "{pattern: [big, big]}"], ["--router-options needs --router"]),
])
def test_a_router_that_does_not_fit_is_one_clear_line(tiny_run, capsys, arguments, fragments):
    code = run_cli(generate_cli.run, [str(tiny_run), "--max-new-tokens", "2", *arguments])
    captured = capsys.readouterr()
    assert_error_output(code, captured.err, *fragments)
    assert captured.out == ""
