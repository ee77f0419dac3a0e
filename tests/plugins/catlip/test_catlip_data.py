"""Image-text shards, the shard builder, OpenMoji captions and the `image_text_shards` dataset."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest
import torch
from PIL import Image

from helpers import REPO, assert_one_line_error, assert_unchanged, run_command, snapshot
from plugins.catlip import labels as labels_module
from plugins.catlip.dataset import ImageTextShardsConfig, build_image_text_shards
from plugins.catlip.openmoji import caption_for
from plugins.catlip.shards import ImageTextSample, load_index, write_shards
from plugins.catlip.synsets import SynsetMapper
from plugins.catlip.wordnet import DEBIAN_WORDNET
from toolkit.data import ShardInfo
from toolkit.errors import DataError

needs_wordnet = pytest.mark.skipif(not (DEBIAN_WORDNET / "data.noun").is_file(), reason="no WordNet")
CAPTIONS = ["a red dog", "a blue cat", "green ball", "a dog and a cat", "xyzzy plugh", "a red tree",
            "cat on a tree", "blue dog"]


def png(colour: tuple[int, int, int], size: int = 20) -> bytes:
    image = Image.new("RGB", (size, size), colour)
    for x in range(size // 2):  # an asymmetric mark, so flips and crops change pixels
        image.putpixel((x, x // 2), (255 - colour[0], 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def samples(count: int, start: int = 0) -> list[ImageTextSample]:
    return [ImageTextSample(f"s{start + i:05d}", png(((37 * i) % 256, (91 * i) % 256, 120)), "png",
                            CAPTIONS[i % len(CAPTIONS)]) for i in range(count)]


@pytest.fixture
def shard_dir(tmp_path):
    directory = tmp_path / "shards"
    write_shards(samples(40), directory, "train", samples_per_shard=16)
    write_shards(samples(10, start=100), directory, "val", samples_per_shard=16)
    return directory


def config(shard_dir, tmp_path, **overrides) -> ImageTextShardsConfig:
    values = dict(train_shards=str(shard_dir / "train-*.tar"), val_shards=str(shard_dir / "val-*.tar"),
                  image_size=16, batch_size=4, cache_dir=str(tmp_path / "cache"))
    values.update(overrides)
    return ImageTextShardsConfig(**values)


def test_openmoji_captions_come_from_unicode_names():
    assert caption_for("1F415") == "DOG"
    assert caption_for("2764-FE0F") == "HEAVY BLACK HEART"  # the variation selector is silent
    assert caption_for("1F468-200D-1F373") == "MAN COOKING"
    assert caption_for("E000") == ""  # private use: no name, the emoji is skipped


def test_index_skips_counts_and_names_an_unreadable_image(tmp_path, caplog):
    broken = [*samples(3), ImageTextSample("broken", b"not an image at all", "png", "a dog")]
    (path,) = write_shards(broken, tmp_path / "shards")
    with caplog.at_level(logging.WARNING):
        index = load_index(path, tmp_path / "cache")
    assert index.keys == ["s00000", "s00001", "s00002"] and index.unreadable == ["broken"]
    assert index.captions == CAPTIONS[:3]
    assert "broken" in caplog.text and str(path) in caplog.text


@needs_wordnet
def test_labels_rank_split_resume_and_augmentation(shard_dir, tmp_path):
    single = build_image_text_shards(config(shard_dir, tmp_path), "train", ShardInfo(seed=3))
    assert single.num_samples == 40 and (tmp_path / "cache" / "synsets").is_dir()
    # "xyzzy plugh" names no synset: an all-zero label, counted rather than fatal.
    assert single.empty_labels == 5
    first = [single.next_batch() for _ in range(3)]
    assert first[0]["images"].shape == (4, 3, 16, 16) and first[0]["labels"].shape[0] == 4
    # Two ranks, each half the micro-batch, together see exactly the single process's batch.
    ranks = [build_image_text_shards(config(shard_dir, tmp_path, batch_size=2), "train",
                                     ShardInfo(rank=r, world_size=2, seed=3)) for r in range(2)]
    both = [ranks[r].next_batch() for r in range(2)]
    assert [*both[0]["captions"], *both[1]["captions"]] == first[0]["captions"]
    torch.testing.assert_close(torch.cat([b["labels"] for b in both]), first[0]["labels"])
    # Resume after two batches: the third batch comes back pixel for pixel.
    resumed = build_image_text_shards(config(shard_dir, tmp_path), "train", ShardInfo(seed=3))
    replay = build_image_text_shards(config(shard_dir, tmp_path), "train", ShardInfo(seed=3))
    replay.next_batch(), replay.next_batch()
    resumed.load_state_dict(replay.state_dict())
    torch.manual_seed(123)  # the augmentation must not depend on the global generator
    torch.testing.assert_close(resumed.next_batch()["images"], first[2]["images"], rtol=0, atol=0)
    # Training crops and flips; validation is deterministic and the same every pass.
    val = build_image_text_shards(config(shard_dir, tmp_path), "val", ShardInfo())
    passes = [[batch["images"] for batch in val] for _ in range(2)]
    assert len(passes[0]) == 3 and all(torch.equal(a, b) for a, b in zip(*passes))
    assert len(list(val)[-1]["captions"]) == 2  # 10 samples in batches of 4: the last is padded
    plain = build_image_text_shards(config(shard_dir, tmp_path, crop_scale_min=1.0, flip=False), "train",
                                    ShardInfo(seed=3))
    assert not torch.equal(plain.next_batch()["images"], first[0]["images"])


@needs_wordnet
def test_label_cache_means_no_wordnet_work_the_second_time(shard_dir, tmp_path, monkeypatch):
    build_image_text_shards(config(shard_dir, tmp_path), "train", ShardInfo())

    def no_wordnet():
        raise AssertionError("WordNet was used although every cache entry exists")

    monkeypatch.setattr(labels_module, "shared_mapper", no_wordnet)
    again = build_image_text_shards(config(shard_dir, tmp_path), "train", ShardInfo())
    assert again.next_batch()["labels"].sum() > 0


@needs_wordnet
def test_a_word_whose_first_noun_sense_has_another_name_is_dropped():
    mapper = labels_module.shared_mapper()
    assert isinstance(mapper, SynsetMapper)
    # automobile.n.01 resolves to the synset car.n.01: CatLIP keeps only exact names.
    assert mapper.lookup("automobile") is None
    assert mapper.lookup("car")[0] == "car.n.01"


@needs_wordnet
def test_top_k_larger_than_the_vocabulary_is_a_clear_error(shard_dir, tmp_path):
    with pytest.raises(DataError, match="data.top_k asks for 500"):
        build_image_text_shards(config(shard_dir, tmp_path, top_k=500), "train", ShardInfo())


def test_builder_from_folder_and_csv_and_a_bad_row(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    for i, sample in enumerate(samples(3)):
        (folder / f"img{i}.png").write_bytes(sample.image)
        (folder / f"img{i}.txt").write_text(sample.caption)
    (folder / "orphan.png").write_bytes(png((1, 2, 3)))  # no caption: skipped
    tool = str(REPO / "tools" / "build_image_text_shards.py")
    result = run_command([sys.executable, tool, "--folder", str(folder), "--out", str(tmp_path / "a"), "--prefix", "shard"])
    assert result.returncode == 0, result.stderr
    assert load_index(tmp_path / "a" / "shard-000000.tar", tmp_path / "cache").captions == CAPTIONS[:3]
    table = tmp_path / "pairs.csv"
    table.write_text("path,caption\nfolder/img0.png,first one\nfolder/img1.png,second\n")
    result = run_command([sys.executable, tool, "--csv", str(table), "--out", str(tmp_path / "b"), "--prefix", "shard"])
    assert result.returncode == 0, result.stderr
    assert load_index(tmp_path / "b" / "shard-000000.tar", tmp_path / "cache").captions == ["first one", "second"]
    table.write_text("path,caption\nfolder/img0.png,fine\nfolder/missing.png,gone\n")
    result = run_command([sys.executable, tool, "--csv", str(table), "--out", str(tmp_path / "c"), "--prefix", "shard"])
    assert_one_line_error(result, "pairs.csv, line 3", "missing.png")
    # The one shard was never completed: no shard and no temporary of one.
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").iterdir())


@needs_wordnet
def test_vocabulary_command(shard_dir, tmp_path):
    out = tmp_path / "synsets.json"
    result = run_command(["toolkit-catlip-vocab", "--shards", str(shard_dir / "train-*.tar"), "--min-count", "2",
                          "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    assert result.returncode == 0, result.stderr
    entries = json.loads(out.read_text())
    assert {entry["synset"] for entry in entries} == {"dog.n.01", "cat.n.01", "red.n.01", "blue.n.01", "tree.n.01",
                                                       "green.n.01", "ball.n.01"}
    assert all(set(entry) == {"synset", "offset", "count", "lemma"} for entry in entries)
    assert "5 captions have no synset" in result.stdout
    before = snapshot(tmp_path)
    result = run_command(["toolkit-catlip-vocab", "--shards", str(tmp_path / "none-*.tar"), "--out", str(out)])
    assert_one_line_error(result, "none-*.tar")
    assert_unchanged(before, tmp_path)  # the vocabulary built above is kept as it was


def test_an_image_over_the_member_cap_is_refused_naming_shard_member_and_cap(tmp_path):
    (path,) = write_shards(samples(3), tmp_path / "shards")
    image_size = len(samples(1)[0].image)
    with pytest.raises(DataError) as caught:
        load_index(path, tmp_path / "cache", max_member_bytes=image_size - 1)
    assert str(path) in str(caught.value) and "'s00000.png'" in str(caught.value)
    assert f"{image_size - 1}-byte" in str(caught.value)
    assert not list((tmp_path / "cache").rglob("*.json"))  # nothing cached
    # An index cached under a larger cap is checked again under a smaller one.
    assert len(load_index(path, tmp_path / "cache")) == 3
    with pytest.raises(DataError, match="s00000 \\(image\\)"):
        load_index(path, tmp_path / "cache", max_member_bytes=image_size - 1)
    with pytest.raises(ValueError, match="max_member_bytes"):
        ImageTextShardsConfig(max_member_bytes=0)
