"""Byte and BPE tokenizers: round trips, specials, caching, names."""
import pytest

from scaling.data.corpus import Document
from scaling.data.tokenizer import BPETokenizer, ByteTokenizer, Tokenizer, get_tokenizer
from scaling.errors import ConfigError, DataError

SAMPLES = ["Call me Ishmael.", "naïve café — 日本語 🐋", "tabs\tand\nnewlines  ", ""]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_CACHE_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def docs():
    return [Document(f"d{i}", f"It is a truth universally acknowledged, number {i}. Ünïcode {i} 鲸", "a", "")
            for i in range(30)]


@pytest.mark.parametrize("text", SAMPLES)
def test_byte_round_trip(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert all(0 <= i < 256 for i in ids)
    assert tok.decode(ids) == text
    assert tok.decode(ids + [tok.eos_id, tok.pad_id]) == text


def test_byte_specials_and_vocab():
    tok = ByteTokenizer()
    assert (tok.eos_id, tok.pad_id, tok.vocab_size) == (256, 257, 258)
    assert isinstance(tok, Tokenizer)


def test_decode_survives_invalid_utf8():
    tok = ByteTokenizer()
    ids = tok.encode("鲸")[:2]  # half a character
    assert tok.decode(ids) == "\ufffd"


def test_bpe_round_trip_and_specials(cache, docs):
    tok = get_tokenizer("bpe:300", docs)
    assert isinstance(tok, BPETokenizer) and isinstance(tok, Tokenizer)
    assert tok.vocab_size <= 300 and {tok.eos_id, tok.pad_id} == {0, 1}
    for text in SAMPLES + [docs[0].text]:
        ids = tok.encode(text)
        assert tok.eos_id not in ids and tok.pad_id not in ids
        assert tok.decode(ids) == text
    assert len(tok.encode(docs[3].text)) < len(docs[3].text.encode())  # merges were learned
    partial = tok.encode("鲸")
    assert "\ufffd" in tok.decode(partial[:-1]) or len(partial) == 1


def test_bpe_is_cached_by_corpus_and_vocab(cache, docs):
    first = get_tokenizer("bpe:300", docs)
    files = list((cache / "tokenizers").iterdir())
    assert len(files) == 1
    again = get_tokenizer("bpe:300", docs)
    assert again.fingerprint == first.fingerprint
    assert len(list((cache / "tokenizers").iterdir())) == 1
    get_tokenizer("bpe:290", docs)
    get_tokenizer("bpe:300", docs[:10])
    assert len(list((cache / "tokenizers").iterdir())) == 3


@pytest.mark.parametrize("name", ["bytes", "bpe:", "bpe:12", "bpe:x", "wordpiece"])
def test_bad_names(name):
    with pytest.raises(ConfigError, match="tokenizer"):
        get_tokenizer(name, [])


def test_bpe_needs_documents(cache):
    with pytest.raises(DataError, match="trained on documents"):
        get_tokenizer("bpe", [])
