"""The CLIP baseline: towers, open_clip's loss (also gathered across two gloo ranks), task, recipe."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from helpers import assert_one_line_error, assert_unchanged, run_command, snapshot

from plugins.clip.model import PRESETS, build_clip
from plugins.clip.task import (
    ClipLossConfig,
    ClipLossFunction,
    ContrastiveConfig,
    ContrastiveTask,
)

TINY_TEXT = ["model.num_classes=32"]


def symmetric_cross_entropy(image: torch.Tensor, text: torch.Tensor, scale: float) -> torch.Tensor:
    logits = scale * image @ text.T  # [B, B]: image i against caption j
    targets = torch.arange(len(image))
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def test_towers_give_normalised_features_and_build_on_meta():
    torch.manual_seed(0)
    model = build_clip(PRESETS["clip-vit-tiny"](num_classes=32))
    images, texts = torch.randn(3, 3, 64, 64), torch.randint(1, 1000, (3, 77))
    image_features, text_features, scale = model(images, texts)
    assert image_features.shape == text_features.shape == (3, 32)
    torch.testing.assert_close(image_features.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(text_features.norm(dim=-1), torch.ones(3))
    assert abs(float(scale) - 1 / 0.07) < 1e-3
    with torch.device("meta"):
        big = build_clip(PRESETS["clip-vit-b16"]())
    assert next(big.parameters()).is_meta
    assert len(big.fsdp_units()) == 12 + 12  # image and text blocks


def test_loss_is_the_symmetric_cross_entropy():
    torch.manual_seed(1)
    image, text = F.normalize(torch.randn(6, 8), dim=-1), F.normalize(torch.randn(6, 8), dim=-1)
    loss = ClipLossFunction()(image, text, torch.tensor(10.0))
    torch.testing.assert_close(loss, symmetric_cross_entropy(image, text, 10.0))


def _rank_gradients(rank: int, world_size: int, init_file: str, inputs: torch.Tensor, weight: torch.Tensor,
                    results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        projection = weight.clone().requires_grad_(True)
        local = inputs.chunk(world_size)[rank]  # [B / world, 2, D]
        image, text = F.normalize(local[:, 0] @ projection, dim=-1), F.normalize(local[:, 1] @ projection, dim=-1)
        loss = ClipLossFunction(ClipLossConfig(local_loss=True, gather_with_grad=True))(image, text, torch.tensor(5.0))
        loss.backward()
        gradient = projection.grad.clone()
        dist.all_reduce(gradient)  # DDP averages gradients across ranks
        results[rank] = gradient / world_size
    finally:
        dist.destroy_process_group()


def test_two_ranks_with_gather_with_grad_match_one_process_on_the_whole_batch(tmp_path):
    torch.manual_seed(2)
    inputs, weight = torch.randn(8, 2, 5), torch.randn(5, 4)  # 8 (image, text) pairs
    projection = weight.clone().requires_grad_(True)
    image, text = F.normalize(inputs[:, 0] @ projection, dim=-1), F.normalize(inputs[:, 1] @ projection, dim=-1)
    symmetric_cross_entropy(image, text, 5.0).backward()
    results = mp.Manager().dict()
    mp.start_processes(_rank_gradients, args=(2, str(tmp_path / "init"), inputs, weight, results), nprocs=2,
                       start_method="spawn")
    for rank in range(2):
        torch.testing.assert_close(results[rank], projection.grad, rtol=1e-5, atol=1e-6)


def test_task_tokenises_each_caption_once():
    task = ContrastiveTask(ContrastiveConfig())
    calls: list[list[str]] = []
    real = task.tokenize(["warm-up"])  # loads open_clip's tokenizer
    tokenizer = task._tokenizer

    def counting(captions):
        calls.append(list(captions))
        return tokenizer(captions)

    task._tokenizer = counting
    first = task.tokenize(["a dog", "a cat", "a dog"])
    second = task.tokenize(["a cat", "a dog"])
    assert calls == [["a dog", "a cat"]] and first.shape == (3, real.shape[1])
    assert torch.equal(first[0], first[2]) and torch.equal(second[0], first[1])


def test_unknown_text_model_is_one_clear_line(tmp_path):
    before = snapshot(tmp_path)
    result = run_command(["toolkit-train", "clip/tiny.yaml", "model.text_model=ViT-Nope", "--dry-run",
                          f"trainer.out_dir={tmp_path / 'run'}"])
    assert_one_line_error(result, "model.text_model", "ViT-Nope")
    assert_unchanged(before, tmp_path)


def test_tiny_recipe_resolves_on_the_catlip_data(tmp_path):
    result = run_command(["toolkit-train", "clip/tiny.yaml", "--dry-run", f"trainer.out_dir={tmp_path}"])
    assert result.returncode == 0, result.stderr
    assert "clip-vit-tiny (CLIPModel)" in result.stdout + result.stderr


def test_logit_scale_is_clamped_to_100_as_open_clip_does():
    import math

    torch.manual_seed(3)
    model = build_clip(PRESETS["clip-vit-tiny"](num_classes=32))
    images, texts = torch.randn(2, 3, 64, 64), torch.randint(1, 1000, (2, 77))
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1000.0))
    model.eval()
    _, _, scale = model(images, texts)
    torch.testing.assert_close(scale, torch.tensor(100.0), rtol=1e-6, atol=0)
    assert float(model.logit_scale.detach()) == pytest.approx(math.log(1000.0))  # eval mode leaves the parameter
    model.train()
    _, _, scale = model(images, texts)
    torch.testing.assert_close(scale, torch.tensor(100.0), rtol=1e-6, atol=0)
    assert float(model.logit_scale.detach()) == pytest.approx(math.log(100.0), abs=1e-6)  # the parameter itself, as open_clip
    scale.backward()  # at the bound the gradient still flows, so the scale can come back down
    torch.testing.assert_close(model.logit_scale.grad, scale.detach(), rtol=1e-6, atol=0)
    with torch.no_grad():
        model.logit_scale.fill_(-1.0)  # open_clip's lower bound: log scale 0, scale 1
    _, _, scale = model(images, texts)
    torch.testing.assert_close(scale, torch.tensor(1.0))


class TinyTowers(torch.nn.Module):
    """A stand-in for CLIPModel with the same call: (images, token ids) -> normalised features, scale."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(4)  # the same weights in every process
        self.image_projection = torch.nn.Parameter(torch.randn(3 * 4 * 4, 8, generator=generator))
        self.token_embedding = torch.nn.Parameter(torch.randn(49408, 8, generator=generator))

    def forward(self, images, texts):
        image_features = F.normalize(images.flatten(1) @ self.image_projection, dim=-1)  # [B, 8]
        text_features = F.normalize(self.token_embedding[texts].mean(1), dim=-1)  # [B, 8]
        return image_features, text_features, torch.tensor(7.0)


VALIDATION_CAPTIONS = ["a red dog", "a blue cat", "green ball", "a tree", "two kites"]
UNEVEN_CASES = [(3, 0), (2, 3), (0, 1)]  # real rows on rank 0 and rank 1; batches are padded to 4


def padded_batch(images: torch.Tensor, captions: list[str], rows: slice, size: int = 4) -> dict:
    batch_images = torch.zeros(size, *images.shape[1:])  # [size, 3, 4, 4]: the validation pad
    real = images[rows]
    batch_images[:len(real)] = real
    return {"images": batch_images, "captions": captions[rows]}


def _rank_validation(rank: int, world_size: int, init_file: str, images: torch.Tensor, results) -> None:
    from datetime import timedelta

    # A short collective timeout turns a hang (a rank skipping a collective) into a failure.
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=30))
    try:
        task, model = ContrastiveTask(ContrastiveConfig(), ClipLossFunction()), TinyTowers().eval()
        for case, (first, second) in enumerate(UNEVEN_CASES):
            rows = slice(0, first) if rank == 0 else slice(first, first + second)
            with torch.no_grad():
                output = task.validation_step(model, padded_batch(images, VALIDATION_CAPTIONS, rows))
            results[(case, rank)] = (float(output.loss) * output.items, output.items)
    finally:
        dist.destroy_process_group()


def test_validation_with_uneven_rows_on_two_ranks_equals_one_process_on_all_rows(tmp_path):
    images = torch.randn(5, 3, 4, 4, generator=torch.Generator().manual_seed(5))
    results = mp.Manager().dict()
    mp.start_processes(_rank_validation, args=(2, str(tmp_path / "init"), images, results), nprocs=2,
                       start_method="spawn")
    task, model = ContrastiveTask(ContrastiveConfig(), ClipLossFunction()), TinyTowers().eval()
    for case, (first, second) in enumerate(UNEVEN_CASES):
        rows = slice(0, first + second)
        with torch.no_grad():
            single = task.validation_step(model, padded_batch(images, VALIDATION_CAPTIONS, rows, size=6))
            image_features, text_features, _ = model(images[rows], task.tokenize(VALIDATION_CAPTIONS[rows]))
        reference = symmetric_cross_entropy(image_features, text_features, 7.0)
        torch.testing.assert_close(single.loss, reference, rtol=1e-6, atol=1e-6)
        # The engine's validation loss: the item-weighted mean of every rank's step loss.
        weighted, items = (sum(results[(case, rank)][index] for rank in range(2)) for index in (0, 1))
        assert items == first + second and (results[(case, 0)][1], results[(case, 1)][1]) == (first, second)
        assert weighted / items == pytest.approx(float(reference), rel=1e-6)
