"""Tiny Duo models shared by the duo tests (3 layers, width 64: milliseconds per forward)."""

from __future__ import annotations

import torch

from plugins.duo.model import DuoConfig, DuoOpenELM
from plugins.duo.routers import FixedRouter

TINY = dict(vocab_size=64, num_layers=3, model_dim=64, head_dim=16, ffn_dim_divisor=64, max_context_length=48,
            small_ffn_ratio=4)


# duo/tiny.yaml shrunk to seconds: 2 layers, width 32, 16-token windows, 4 steps, an evaluation.
TINY_DUO = ["model.num_layers=2", "model.model_dim=32", "model.head_dim=8", "model.ffn_dim_divisor=16",
            "model.small_ffn_ratio=4", "data.seq_len=16", "trainer.max_steps=4", "trainer.save_every=0",
            "trainer.keep_last=1", "trainer.log_every=1", "trainer.eval_every=2",
            "trainer.precision=fp32", "schedule.warmup_steps=1", "trainer.peak_flops=1e12",
            "trainer.progress=false", "trainer.threads=1"]


def tiny_duo(router: str = "random", **options) -> DuoOpenELM:
    torch.manual_seed(0)
    return DuoOpenELM(DuoConfig(**TINY, router=router, router_options=options)).eval()


def route_all(model: DuoOpenELM, choice: str) -> DuoOpenELM:
    model.set_router(FixedRouter([choice] * model.config.num_layers))
    return model


def tiny_overrides(model_section: str = "model") -> list[str]:
    """TINY_DUO at 2 steps (saved), for a recipe whose model is `model_section` (`models.duo`)."""
    shrunk = [*TINY_DUO, "trainer.max_steps=2", "trainer.eval_every=0", "trainer.save_every=2", "data.batch_size=4"]
    return [model_section + item[len("model"):] if item.startswith("model.") else item for item in shrunk]


def train_tiny_run(out_dir, *overrides: str, recipe_name: str = "duo/tiny.yaml", model_section: str = "model"):
    """duo/tiny.yaml (or `recipe_name`) shrunk to seconds, trained in this process into `out_dir`."""
    # Imported here: test_duo_distributed.py runs this module under torchrun, where tests/ (and so
    # helpers.py) is not on the path and nothing is trained in-process.
    from helpers import train_in_process

    return train_in_process(recipe_name, [*tiny_overrides(model_section), *overrides], out_dir)
