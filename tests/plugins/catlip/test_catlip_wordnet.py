import pytest

from plugins.catlip.wordnet import LEXNAMES, WordNetMissing, load_wordnet, DEBIAN_WORDNET


def test_lexnames_list():
    assert len(LEXNAMES) == 45
    assert LEXNAMES[0] == ("adj.all", 3) and LEXNAMES[-1] == ("adj.ppl", 3)
    assert LEXNAMES[3] == ("noun.Tops", 1)


def test_missing_wordnet_has_install_hint(tmp_path):
    with pytest.raises(WordNetMissing) as info:
        load_wordnet(debian_dir=tmp_path / "empty", cache_dir=tmp_path / "cache", use_nltk_data=False)
    assert "apt-get install wordnet-base" in info.value.one_line()
    assert "nltk.download('wordnet')" in info.value.one_line()


@pytest.mark.skipif(not (DEBIAN_WORDNET / "data.noun").is_file(), reason="Debian wordnet-base not installed")
def test_builds_reader_from_debian_files(tmp_path):
    reader = load_wordnet(cache_dir=tmp_path, use_nltk_data=False)
    assert reader.synset("dog.n.01").name() == "dog.n.01"
    assert reader.morphy("kites", "n") == "kite"
    assert not (tmp_path / "nltk_data" / "corpora" / "wordnet").is_symlink()
