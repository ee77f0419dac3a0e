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
