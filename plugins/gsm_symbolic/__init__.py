"""GSM-Symbolic template engine: a restricted expression evaluator (`expressions`), the official
template format (`template`), named vocabularies of our own writing (`vocabularies`), an instance
sampler (`sampler`, with the variants symbolic, names, numbers, p1, p2 and noop), the NoOp clause
bank (`noop`) and the `toolkit-gsm-symbolic generate` command (`cli`).

The templates under `templates/symbolic/` are word problems of this project's own writing in the
official format; they have no GSM8K original, so their `id_orig` is simply their own number.
`templates/p1/` and `templates/p2/` hold harder versions of some of them (one and two extra
clauses that change the arithmetic); their `id_orig` is the symbolic template they extend.
Not a pluggy plugin yet (no `register_*` hooks): the `gsm_symbolic` evaluator of issue 3 will be.
"""
