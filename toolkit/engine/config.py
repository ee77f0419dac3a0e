"""Typed configs of the sections the core owns: `trainer` and `dist`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainerConfig:
    """The `trainer:` section of a recipe: the loop, precision, logging and checkpoints."""

    max_steps: int = 100  # optimizer steps
    out_dir: str = "runs/default"  # run directory: recipe.yaml, metrics.jsonl, step-NNNNNN/
    seed: int = 0
    precision: str = "fp32"  # "fp32" or "bf16" (autocast; weights and optimizer stay fp32)
    grad_accum: int = 1  # micro-steps per optimizer step
    clip_grad: float = 1.0  # max global grad norm; 0 turns clipping off
    log_every: int = 10  # steps between metrics.jsonl lines
    eval_every: int = 0  # steps between validations; 0 = only at the end
    eval_batches: int = 0  # validation micro-batches per evaluation, all ranks together; 0 = all
    save_every: int = 0  # steps between checkpoints; 0 = only at the end
    keep_last: int = 3  # checkpoints kept; older ones are deleted
    ema_decay: float = 0.0  # >0 keeps an exponential moving average of the weights (saved too)
    peak_flops: float = 0.0  # hardware peak FLOP/s for MFU; 0 = measure a matmul at start
    compile: bool = False  # torch.compile the model
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    progress: bool = True  # progress bar on stderr (rank 0)


@dataclass
class DistConfig:
    """The `dist:` section: how the model is wrapped when run under torchrun."""

    strategy: str = "ddp"  # "ddp" or "fsdp" (FSDP2 fully_shard per block)
    backend: str = "auto"  # "auto" = nccl on CUDA, gloo on CPU
    device: str = "auto"  # "auto" = cuda if available, else cpu
