"""The GSM-Symbolic plugin: the template engine, the data-set generator, and the evaluator.

Registers
    evaluator `gsm_symbolic`  the GSM8K 8-shot protocol of the lm_eval plugin on instance sets,
                              with accuracy per set, the spread across sets and the drop from the
                              original questions (`evaluator`, `report`)

The engine: a restricted expression evaluator (`expressions`), the official template format
(`template`), named vocabularies of our own writing (`vocabularies`), an instance sampler
(`sampler`, with the variants symbolic, names, numbers, p1, p2 and noop), the NoOp clause bank
(`noop`) and the `toolkit-gsm-symbolic generate` command (`cli`).

The templates under `templates/symbolic/` are word problems of this project's own writing in the
official format; they have no GSM8K original, so their `id_orig` is simply their own number.
`templates/p1/` and `templates/p2/` hold harder versions of some of them (one and two extra
clauses that change the arithmetic); their `id_orig` is the symbolic template they extend.
"""

from __future__ import annotations

from toolkit import hookimpl


@hookimpl
def register_evaluators(register):
    # Imported here: the evaluator pulls in torch and the lm plugins, which the generator CLI never needs.
    from plugins.gsm_symbolic.evaluator import GSMSymbolicConfig, GSMSymbolicEvaluator

    register("gsm_symbolic", GSMSymbolicEvaluator, config=GSMSymbolicConfig)
