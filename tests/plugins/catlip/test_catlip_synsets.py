import pytest

from plugins.catlip.synsets import SynsetMapper, SynsetVocabulary
from plugins.catlip.wordnet import DEBIAN_WORDNET, load_wordnet
from toolkit.errors import DataError

pytestmark = pytest.mark.skipif(not (DEBIAN_WORDNET / "data.noun").is_file(), reason="no WordNet")


@pytest.fixture(scope="module")
def mapper(tmp_path_factory):
    return SynsetMapper(load_wordnet(cache_dir=tmp_path_factory.mktemp("wn")))


def test_caption_to_synsets(mapper):
    names = [name for name, _, _ in mapper.synsets("Two dogs chasing kites")]
    assert "dog.n.01" in names and "kite.n.01" in names


def test_vocabulary_threshold_topk_json_and_labels(mapper, tmp_path):
    captions = ["a dog", "dogs and a cat", "a kite", "the dog"]
    vocabulary = SynsetVocabulary.build(captions, mapper, min_count=2)
    assert [entry["synset"] for entry in vocabulary.entries] == ["dog.n.01"]
    top = SynsetVocabulary.build(captions, mapper, top_k=2)
    assert len(top) == 2 and top.entries[0]["count"] == 3
    top.save(tmp_path / "v.json")
    loaded = SynsetVocabulary.load(tmp_path / "v.json", expected_size=2)
    assert loaded.entries == top.entries
    with pytest.raises(DataError):
        SynsetVocabulary.load(tmp_path / "v.json", expected_size=3)
    assert loaded.labels("zzzz qqq", mapper).sum() == 0
    assert loaded.empty_captions == 1
    assert loaded.mine_labels(["a dog"], mapper) == [[0]]


@pytest.mark.parametrize("caption, expected", [
    # A plural that is itself a WordNet lemma: CatLIP's lemmatizer takes the shortest base form.
    ("shoes", {"shoe.n.01"}),  # "shoes.n.01" does not exist: the label was lost before
    ("clapping hands", {"hand.n.01"}),  # not hands.n.01 (guardianship)
    ("eyes", {"eye.n.01"}),
    ("face with tears of joy", {"face.n.01", "tear.n.01", "joy.n.01"}),
    ("crying cat face", {"cry.n.01", "cat.n.01", "face.n.01"}),
    ("sunglasses", {"sunglass.n.01"}),
    ("women", {"woman.n.01"}),  # the exceptions list
    ("people", {"people.n.01"}),  # no other base form: the word itself
    ("qqqz is of", set()),  # no noun synset named word.n.01: no label
])
def test_words_are_lemmatized_as_catlip_does(mapper, caption, expected):
    assert {name for name, _, _ in mapper.synsets(caption)} == expected


def test_lemmatize_noun_picks_the_shortest_base_form(mapper):
    from plugins.catlip.synsets import lemmatize_noun

    assert mapper.wordnet.morphy("hands", "n") == "hands"  # what the labels used before
    assert lemmatize_noun(mapper.wordnet, "hands") == "hand"
    assert lemmatize_noun(mapper.wordnet, "axes") == "ax"  # ["ax", "axis"]: the first of the shortest
    assert lemmatize_noun(mapper.wordnet, "zzqx") == "zzqx"


def test_a_labeling_change_does_not_reuse_cached_vocabularies_or_labels(mapper, tmp_path, monkeypatch):
    import plugins.catlip.labels as labels
    from plugins.catlip.shards import ShardIndex

    monkeypatch.setattr(labels, "shared_mapper", lambda: mapper)
    shard = tmp_path / "shard-000000.tar"
    shard.write_bytes(b"x")
    index = ShardIndex(shard, ["a", "b"], [0, 0], [1, 1], ["dogs", "clapping hands"], [], 0)
    first = labels.cached_vocabulary([index], 1, None, tmp_path / "cache")
    vocabulary = SynsetVocabulary.load(first)
    assert {entry["synset"] for entry in vocabulary.entries} == {"dog.n.01", "hand.n.01"}
    mined = labels.cached_labels(index, vocabulary, first, tmp_path / "cache")
    monkeypatch.setattr(labels, "LABELING_VERSION", "old")
    assert labels.cached_vocabulary([index], 1, None, tmp_path / "cache") != first
    assert labels.cached_labels(index, vocabulary, first, tmp_path / "cache") == mined
    assert len(list((tmp_path / "cache" / "labels").glob("*.json"))) == 2  # mined again, not reused
