"""Fixtures the OpenELM plugin's test modules share."""

from __future__ import annotations

import pytest

from tests.plugins.openelm.llama_fixtures import make_llama_dir


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    """(directory, model): a random tiny Llama saved by transformers, with a tokenizer.json."""
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    return make_llama_dir(tmp_path_factory.mktemp("llama"))
