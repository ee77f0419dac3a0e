"""fashion_mnist: idx parsing, clear errors on bad files, deterministic rank-split resumable batches."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from plugins.catlip.dataset import MEAN, STD
from plugins.transfer.fashion_mnist import (
    FashionMNISTConfig,
    build_fashion_mnist,
    read_idx,
)
from tests.plugins.transfer.conftest import write_idx
from toolkit.data import ShardInfo
from toolkit.errors import DataError


def test_read_idx_round_trips_shape_and_values(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x.gz", array)
    assert np.array_equal(read_idx(tmp_path / "x.gz", 3), array)


@pytest.mark.parametrize("content, fragment", [
    (b"\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00\x00\x1c\x00\x00\x00\x1c" + bytes(100), "promises"),  # truncated data
    (b"\x12\x34\x08\x03", "bad magic"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x01\x00", "1 dimensions, expected"),  # a labels file where images belong
])
def test_malformed_idx_is_one_data_error_naming_the_file(tmp_path, content, fragment):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(content)
    with pytest.raises(DataError) as caught:
        read_idx(path, 3)
    line = caught.value.one_line()
    assert str(path) in line and fragment in line and "apt-get install dataset-fashion-mnist" in line


def test_missing_and_non_gzip_files_are_data_errors(tmp_path, fashion_root):
    (fashion_root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: Fashion-MNIST file not found"):
        build_fashion_mnist(FashionMNISTConfig(root=str(fashion_root)), "val", ShardInfo())
    (tmp_path / "plain.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="plain.gz: not a readable gzip file"):
        read_idx(tmp_path / "plain.gz", 3)


def _batches(root, shard, count, **options):
    config = FashionMNISTConfig(root=str(root), image_size=16, batch_size=4, **options)
    source = build_fashion_mnist(config, "train", shard)
    stream = iter(source)
    return source, [next(stream) for _ in range(count)]


def test_batches_have_the_documented_shapes_and_types(fashion_root):
    _, (batch,) = _batches(fashion_root, ShardInfo(), 1)
    assert batch["images"].shape == (4, 3, 16, 16) and batch["images"].dtype == torch.float32
    assert batch["targets"].shape == (4,) and batch["targets"].dtype == torch.int64
    pixels = batch["images"] * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
    assert torch.allclose(pixels[:, 0], pixels[:, 1], atol=1e-5)  # gray repeated to 3 channels


@pytest.mark.parametrize("augment", [False, True])
def test_global_batch_is_the_same_for_any_world_size_and_accumulation(fashion_root, augment):
    # One process with grad_accum 2 sees exactly what ranks 0 and 1 with grad_accum 1 see, crops and
    # flips included (each image's augmentation is seeded by its place in the epoch).
    _, single = _batches(fashion_root, ShardInfo(0, 1, seed=7, grad_accum=2), 6, augment=augment)
    _, rank0 = _batches(fashion_root, ShardInfo(0, 2, seed=7), 3, augment=augment)
    _, rank1 = _batches(fashion_root, ShardInfo(1, 2, seed=7), 3, augment=augment)
    for step in range(3):
        split = torch.cat([rank0[step]["targets"], rank1[step]["targets"]])
        accumulated = torch.cat([single[2 * step]["targets"], single[2 * step + 1]["targets"]])
        assert torch.equal(split, accumulated)
        assert torch.equal(torch.cat([rank0[step]["images"], rank1[step]["images"]]),
                           torch.cat([single[2 * step]["images"], single[2 * step + 1]["images"]]))
    if augment:  # the augmentation did change the pixels
        _, plain = _batches(fashion_root, ShardInfo(0, 1, seed=7, grad_accum=2), 1)
        assert not torch.equal(plain[0]["images"], single[0]["images"])
        return
    # 40 images, global batch 8: the 6 micro-batches (24 images) lie within epoch 0, no image twice.
    first_epoch = torch.cat([batch["images"][:, 0, 0, 0] for batch in single])
    assert len(set(first_epoch.tolist())) == len(first_epoch) == 24


@pytest.mark.parametrize("augment", [False, True])
def test_resume_gives_bit_identical_batches(fashion_root, augment):
    source, _ = _batches(fashion_root, ShardInfo(seed=3, grad_accum=2), 5, augment=augment)
    state = source.state_dict()
    expected = [next(iter(source)) for _ in range(12)]  # crosses an epoch boundary (10 per epoch)
    resumed, _ = _batches(fashion_root, ShardInfo(seed=3, grad_accum=2), 0, augment=augment)
    resumed.load_state_dict(state)
    stream = iter(resumed)
    for wanted in expected:
        got = next(stream)
        assert torch.equal(got["images"], wanted["images"]) and torch.equal(got["targets"], wanted["targets"])


def test_train_limit_and_too_small_data(fashion_root):
    source, _ = _batches(fashion_root, ShardInfo(), 0, train_limit=8)
    assert source.num_samples == 8
    with pytest.raises(DataError, match="fewer than one global batch"):
        _batches(fashion_root, ShardInfo(), 0, train_limit=3)


def test_validation_covers_every_image_once_across_ranks(fashion_root):
    config = FashionMNISTConfig(root=str(fashion_root), image_size=16, batch_size=4, val_limit=11)
    seen = []
    counts = set()
    for rank in range(2):
        batches = list(build_fashion_mnist(config, "val", ShardInfo(rank, 2)))
        counts.add(len(batches))
        for batch in batches:
            valid = batch["targets"] != -100
            seen += batch["images"][valid, 0, 0, 0].tolist()
            assert batch["targets"].shape == (4,)
    assert counts == {2}  # equal batch counts on every rank
    pixel_values = sorted(round((value * STD[0] + MEAN[0]) * 255) for value in seen)
    assert pixel_values == list(range(11))

