"""torchrun with 2 processes (gloo on CPU) gives the losses of 1 process with the same global batch."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import EXAMPLE_RECIPE, run_command


def free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


def torchrun(env, *arguments: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
               "-m", "toolkit.cli.train", *arguments]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def read_losses(run_dir: Path) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r.get("loss", r.get("val_loss")) for r in records]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one(plugin_env, tmp_path, strategy):
    common = [str(EXAMPLE_RECIPE), "trainer.log_every=1", "trainer.max_steps=30", "trainer.save_every=10"]
    single = run_command(["toolkit-train", *common, f"trainer.out_dir={tmp_path / 'one'}", "data.batch_size=32"],
                         env=plugin_env)
    assert single.returncode == 0, single.stderr
    double = torchrun(plugin_env, *common, f"trainer.out_dir={tmp_path / 'two'}", "data.batch_size=16",
                      f"dist.strategy={strategy}")
    assert double.returncode == 0, double.stderr[-3000:]
    assert read_losses(tmp_path / "two") == pytest.approx(read_losses(tmp_path / "one"), rel=1e-5, abs=1e-6)
    one = load_file(tmp_path / "one" / "step-000030" / "model.safetensors")
    two = load_file(tmp_path / "two" / "step-000030" / "model.safetensors")
    assert all(torch.allclose(one[k], two[k], atol=1e-5) for k in one)
    if strategy == "fsdp":  # a sharded run resumes from its gathered checkpoint
        for later in ("step-000020", "step-000030"):
            for file in (tmp_path / "two" / later).iterdir():
                file.unlink()
            (tmp_path / "two" / later).rmdir()
        resumed = torchrun(plugin_env, *common, f"trainer.out_dir={tmp_path / 'two'}", "data.batch_size=16",
                           "dist.strategy=fsdp", "--resume", "auto")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        again = load_file(tmp_path / "two" / "step-000030" / "model.safetensors")
        assert all(torch.allclose(one[k], again[k], atol=1e-5) for k in one)


@pytest.mark.slow
def test_a_failed_save_on_rank_0_stops_every_rank_with_one_clear_line(plugin_env, tmp_path):
    """A file-size limit (RLIMIT_FSIZE, the way a full disk looks to a write) makes rank 0's save
    fail; rank 1 must not wait at a barrier until the collective timeout."""
    import resource

    limit = 32 * 1024  # the log and recipe fit; the weights of a 4096-wide MLP (65 KB) do not
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(free_port()), "-m", "toolkit.cli.train", str(EXAMPLE_RECIPE), "model.hidden=4096",
         "trainer.max_steps=10", "trainer.save_every=5", f"trainer.out_dir={tmp_path / 'run'}"],
        env=plugin_env, capture_output=True, text=True, timeout=300,  # a hang fails here, not a clock check
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and all("step-000005: could not save the checkpoint" in line for line in errors), \
        result.stderr[-3000:]
    assert any("File too large" in line for line in errors)  # rank 0 names the cause
    assert not (tmp_path / "run" / "step-000005").exists() and not list((tmp_path / "run").glob(".tmp-*"))
