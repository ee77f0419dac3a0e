"""A global batch is the same items, with the same augmented pixels, whatever the world size and
grad_accum that read it, and a position saved at one world size resumes at another."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from plugins.catlip.dataset import ImageTextShardsConfig, build_image_text_shards
from plugins.catlip.shards import ImageTextSample, write_shards
from toolkit.data import ShardInfo
from toolkit.data.order import BatchLayout, EpochOrder

GLOBAL_BATCH = 8


def png(index: int, size: int = 20) -> bytes:
    image = Image.new("RGB", (size, size), ((37 * index) % 256, (91 * index) % 256, 120))
    for x in range(size // 2):  # an asymmetric mark, so that crops and flips change pixels
        image.putpixel((x, x // 2), (255, 0, (13 * index) % 256))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("image_text")
    write_shards([ImageTextSample(f"s{i:05d}", png(i), "png", f"caption {i}") for i in range(24)],
                 folder / "shards", "train", samples_per_shard=16)
    return folder


def train_source(folder, batch_size: int, rank: int = 0, world_size: int = 1, grad_accum: int = 1):
    config = ImageTextShardsConfig(train_shards=str(folder / "shards" / "train-*.tar"), labels="none",
                                   image_size=16, batch_size=batch_size, crop_scale_min=0.3,
                                   cache_dir=str(folder / "cache"))
    return build_image_text_shards(config, "train", ShardInfo(rank, world_size, seed=5, grad_accum=grad_accum))


def global_batch(sources: list, grad_accum: int) -> tuple[list[str], torch.Tensor]:
    """One optimizer step's micro-batches of every rank, in the global batch's order."""
    parts = [source.next_batch() for _ in range(grad_accum) for source in sources]  # micro-step major
    return [c for part in parts for c in part["captions"]], torch.cat([part["images"] for part in parts])


def test_augmented_global_batches_do_not_depend_on_world_size_or_accumulation(shards):
    one = train_source(shards, GLOBAL_BATCH)
    expected = [global_batch([one], 1) for _ in range(4)]  # 3 steps an epoch: crosses into epoch 1
    layouts = {"2 ranks": (4, 2, 1), "2 ranks x grad_accum 2": (2, 2, 2), "1 rank x grad_accum 4": (2, 1, 4)}
    for name, (batch_size, world_size, grad_accum) in layouts.items():
        ranks = [train_source(shards, batch_size, rank, world_size, grad_accum) for rank in range(world_size)]
        for step, (captions, images) in enumerate(expected):
            got_captions, got_images = global_batch(ranks, grad_accum)
            assert got_captions == captions, (name, step)
            torch.testing.assert_close(got_images, images, rtol=0, atol=0, msg=f"{name}, step {step}")
    # The crops are random: two epochs show the same image differently.
    first_epoch = dict(zip(*expected[0]))
    later = {caption: image for captions, images in expected[3:] for caption, image in zip(captions, images)}
    shared = [caption for caption in later if caption in first_epoch]
    assert shared and not all(torch.equal(first_epoch[c], later[c]) for c in shared)


def test_a_position_saved_on_two_ranks_resumes_on_one_and_back(shards):
    one = train_source(shards, GLOBAL_BATCH)
    expected = [global_batch([one], 1) for _ in range(3)]
    two = [train_source(shards, 4, rank, 2) for rank in range(2)]
    global_batch(two, 1)
    resumed = train_source(shards, GLOBAL_BATCH)
    resumed.load_state_dict(two[0].state_dict())  # the trainer hands rank 0's state to a new layout
    captions, images = global_batch([resumed], 1)
    assert captions == expected[1][0] and torch.equal(images, expected[1][1])
    back = [train_source(shards, 2, rank, 2, grad_accum=2) for rank in range(2)]
    for source in back:
        source.load_state_dict(resumed.state_dict())
    captions, images = global_batch(back, 2)
    assert captions == expected[2][0] and torch.equal(images, expected[2][1])


def test_item_seeds_follow_the_place_in_the_epoch_not_the_reader():
    whole = EpochOrder(32, BatchLayout(8), seed=1)
    indices, seeds = whole.next_items()
    halves = [EpochOrder(32, BatchLayout(4, world_size=2, rank=rank), seed=1).next_items() for rank in range(2)]
    assert np.array_equal(np.concatenate([h[0] for h in halves]), indices)
    assert [s for h in halves for s in h[1]] == seeds and len(set(seeds)) == 8
    assert EpochOrder(32, BatchLayout(8), seed=2).next_items()[1] != seeds
