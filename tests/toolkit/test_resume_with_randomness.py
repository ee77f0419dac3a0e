"""Resume with the defaults a user gets (the peak FLOP/s measured at start) on a model that draws
random numbers: CatLIP's tiny ViT with dropout, fed random crops. Stopped at step 8 and resumed,
it must end at step 16 with the weights of an uninterrupted run."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

from helpers import run_command
from plugins.catlip.wordnet import DEBIAN_WORDNET

pytestmark = pytest.mark.skipif(not (DEBIAN_WORDNET / "data.noun").is_file(), reason="no WordNet")
COMMON = ["catlip/tiny.yaml", "model.dropout=0.1", "trainer.max_steps=16", "trainer.save_every=8",
          "trainer.eval_every=0", "trainer.eval_batches=1", "trainer.keep_last=0", "trainer.progress=false", "data.batch_size=16"]


@pytest.mark.slow
def test_dropout_run_resumes_to_the_same_weights(tmp_path):
    straight = run_command(["toolkit-train", *COMMON, f"trainer.out_dir={tmp_path / 'straight'}"])
    assert straight.returncode == 0, straight.stderr[-2000:]
    interrupted = tmp_path / "interrupted"
    first = run_command(["toolkit-train", *COMMON, f"trainer.out_dir={interrupted}"])
    assert first.returncode == 0, first.stderr[-2000:]
    shutil.rmtree(interrupted / "step-000016")  # as if stopped right after the step-8 save
    resumed = run_command(["toolkit-train", *COMMON, f"trainer.out_dir={interrupted}", "--resume", "auto"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected = load_file(tmp_path / "straight" / "step-000016" / "model.safetensors")
    actual = load_file(interrupted / "step-000016" / "model.safetensors")
    assert expected.keys() == actual.keys() and all(torch.equal(expected[k], actual[k]) for k in expected)
