"""Chat templates: how a prompt and its response become the text a causal LM is trained on.

A template is two plain strings with one placeholder each, `{prompt}` and `{response}`, filled by
string replacement (recipe text is never formatted or evaluated). The prompt part is what a
generator is given at inference time, so training and sampling see the same prompt tokens.

Named templates:
    plain   the prompt, then the response, joined with nothing in between
    gsm     the lm_eval plugin's GSM8K prompt with no shots (its preamble, "Q: ...", "A: Let's
            think step by step."), so `toolkit-eval gsm_symbolic num_shots=0` prompts a
            fine-tuned model exactly as it was trained; responses end "The final answer is N."
    chatml  ChatML turns, the template of SmolLM2's instruct models
"""

from __future__ import annotations

from dataclasses import dataclass

from plugins.lm_eval.gsm import ANSWER_PREFIX, PREAMBLE
from toolkit.errors import DataError


@dataclass(frozen=True)
class ChatTemplate:
    """`prompt` holds `{prompt}`; `response` holds `{response}`."""

    prompt: str
    response: str

    def render_prompt(self, prompt: str) -> str:
        return self.prompt.replace("{prompt}", prompt)

    def render_response(self, response: str) -> str:
        return self.response.replace("{response}", response)


TEMPLATES: dict[str, ChatTemplate] = {
    "plain": ChatTemplate("{prompt}", "{response}"),
    "gsm": ChatTemplate(PREAMBLE + "\n\nQ: {prompt}\nA: " + ANSWER_PREFIX, " {response}"),
    "chatml": ChatTemplate("<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n", "{response}<|im_end|>"),
}


def chat_template(name: str) -> ChatTemplate:
    """The named template, or a DataError listing the known ones."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise DataError(f"unknown chat template '{name}'; known: {', '.join(sorted(TEMPLATES))}") from None
