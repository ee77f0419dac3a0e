"""The rl task's step time split and memory per model: PPO with the SFT reference, SALSA with a
soup reference, and a single-checkpoint reference beside it.

    python -m plugins.rlhf.bench_rl --work runs/salsa-demo [--steps 6]

Reads what `python -m plugins.rlhf.demo` left in --work (data/, sft-a, sft-b, soup) and runs
`--steps` steps of each configuration in-process into a temporary folder, with the demo's
settings. Prints, per configuration:
    time   the median over steps 2.. of each logged part of the step: generate_s; score_s split
           into reward, policy, reference (SFT model and reference) and value (with the
           advantages); update_s
    memory for each model: its role, parameter bytes, gradient bytes and optimizer-state bytes,
           counted exactly from the tensors after the last step (tensor bytes, not process RSS:
           the figures do not move with allocator caching or with other jobs on the machine)
"""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch

from plugins.lm.tokenizer_files import run_tokenizer_file
from toolkit.assembly import assemble
from toolkit.cli.common import ArgumentParser
from toolkit.engine.trainer import Trainer
from toolkit.plugins import get_registries
from toolkit.recipe import load_recipe

PARTS = ("generate_s", "score_reward_s", "score_policy_s", "score_reference_s", "score_value_s", "score_s",
         "update_s")


def tensor_bytes(tensors: Any) -> int:
    if isinstance(tensors, torch.Tensor):
        return tensors.numel() * tensors.element_size()
    if isinstance(tensors, dict):
        return sum(tensor_bytes(value) for value in tensors.values())
    if isinstance(tensors, (list, tuple)):
        return sum(tensor_bytes(value) for value in tensors)
    return 0


def model_memory(parts) -> dict[str, dict[str, Any]]:
    """Per model: role, parameter, gradient and optimizer-state bytes (state found by parameter identity)."""
    optimized = {id(parameter) for group in parts.optimizer.param_groups for parameter in group["params"]}
    table = {}
    for name, model in parts.models.by_name.items():
        parameters = list(model.module.parameters())
        table[name] = {
            "role": model.role.value,
            "in_optimizer": sum(id(p) in optimized for p in parameters),
            "requires_grad": sum(p.requires_grad for p in parameters),
            "parameter_bytes": tensor_bytes(parameters),
            "gradient_bytes": tensor_bytes([p.grad for p in parameters if p.grad is not None]),
            "optimizer_bytes": tensor_bytes([parts.optimizer.state[p] for p in parameters if p in parts.optimizer.state]),
        }
    return table


def run_configuration(recipe: str, overrides: list[str], steps: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run"
        parts = assemble(load_recipe(recipe, [*overrides, f"trainer.out_dir={out}", f"trainer.max_steps={steps}",
                                              "trainer.save_every=0", "trainer.eval_every=0",
                                              "trainer.progress=false"], get_registries()))
        trainer = Trainer(parts)
        try:
            trainer.fit()
        finally:
            trainer.close()
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        steps_logged = [record for record in records if "generate_s" in record][1:]  # the first warms up
        times = {part: statistics.median(record[part] for record in steps_logged) for part in PARTS}
        return {"time_s": times, "memory": model_memory(parts)}


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m plugins.rlhf.bench_rl", description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="a demo's folder (data/, sft-a, sft-b, soup)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    arguments = parser.parse_args(argv)
    work = arguments.work
    tokenizer = run_tokenizer_file(work / "sft-a") or work / "sft-a" / "tokenizer.model"  # a SmolLM2 demo's is .json
    common = [f"models.policy.source={work / 'sft-a'}", f"models.sft.source={work / 'sft-a'}",
              f"models.value.init_from={work / 'sft-a'}", f"data.tokenizer={tokenizer}",
              f"task.max_new_tokens={arguments.max_new_tokens}", f"data.train_file={work / 'data' / 'train.jsonl'}",
              f"data.val_file={work / 'data' / 'val.jsonl'}"]
    configurations = {
        "ppo (reference: the SFT model)": ("rlhf/ppo.yaml", []),
        "salsa (reference: soup of sft-a, sft-b)": ("rlhf/salsa.yaml", [f"models.reference.source={work / 'soup'}"]),
        "single-checkpoint reference (sft-b)": ("rlhf/salsa.yaml", [f"models.reference.source={work / 'sft-b'}"]),
    }
    print(f"{arguments.steps} steps each, median of steps 2..{arguments.steps}, {torch.get_num_threads()} threads")
    for label, (recipe, extra) in configurations.items():
        result = run_configuration(recipe, [*common, *extra], arguments.steps)
        print(f"\n{label}")
        print("  time  " + "  ".join(f"{part.removesuffix('_s')} {value:.3f}" for part, value in result["time_s"].items()))
        for name, memory in result["memory"].items():
            print(f"  {name:<9} {memory['role']:<7} params {memory['parameter_bytes']:>10,} B  grads "
                  f"{memory['gradient_bytes']:>10,} B  optimizer {memory['optimizer_bytes']:>10,} B  "
                  f"(in optimizer {memory['in_optimizer']}, requiring grad {memory['requires_grad']})")


if __name__ == "__main__":
    main()
