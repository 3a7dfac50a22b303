"""Token caches, pretraining data and batch sampling."""
from pathlib import Path

import numpy as np
import pytest

from scaling.data.corpus import Document
from scaling.data.tokenizer import ByteTokenizer
from scaling.data.tokens import Batches, encode_documents, eval_windows, load_pretrain_data
from scaling.errors import ConfigError, DataError


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_CACHE_DIR", str(tmp_path / "cache"))
    load_pretrain_data.cache_clear()
    yield tmp_path / "cache"
    load_pretrain_data.cache_clear()


def test_documents_are_joined_with_eos(cache):
    tok = ByteTokenizer()
    tokens = encode_documents([Document("a", "hi", "s", ""), Document("b", "é", "s", "")], tok)
    assert tokens.tolist() == [104, 105, 256, 0xC3, 0xA9, 256]
    assert tokens.dtype == np.uint16 and not tokens.flags.writeable


def test_cache_hit_is_the_same_file_and_keyed_by_content(cache):
    tok = ByteTokenizer()
    docs = [Document("a", "some text", "s", "")]
    first = encode_documents(docs, tok, "train")
    second = encode_documents([Document("a", "some text", "s", "")], tok, "train")
    assert first.filename == second.filename and np.array_equal(first, second)
    assert len(list((cache / "tokens").glob("*.bin"))) == 1
    other = encode_documents([Document("a", "other text", "s", "")], tok, "train")
    assert other.filename != first.filename
    assert encode_documents(docs, tok, "val").filename != first.filename
    assert not list((cache / "tokens").glob(".*tmp"))  # no temp files left behind


def test_bundled_byte_data(cache):
    data = load_pretrain_data(None, "byte")
    assert data.corpus_name == "bundled"
    assert data.tokenizer.vocab_size == 258
    assert len(data.train) > 10_000_000 and 0 < len(data.val) < len(data.train) // 10
    assert {d.source for d in data.heldout_docs} == {"sotu", "austen", "melville"}
    assert load_pretrain_data(None, "byte") is data  # reused within the process


def test_user_folder_with_few_documents_splits_by_position(cache, tmp_path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "one.txt").write_text("word " * 2000, encoding="utf-8")
    data = load_pretrain_data(str(tmp_path / "corpus"), "byte")
    assert len(data.val) == round(0.02 * (len(data.train) + len(data.val)))
    assert data.heldout_docs == [] and data.notes


def test_pre_tokenized_array(cache, tmp_path):
    path = tmp_path / "tokens.npy"
    np.save(path, np.arange(1000, dtype=np.uint16) % 256)
    data = load_pretrain_data(str(path), "byte")
    assert (len(data.train), len(data.val)) == (980, 20)
    assert data.val.tolist() == (np.arange(980, 1000) % 256).tolist()
    assert data.heldout_docs == []
    with pytest.raises(ConfigError, match="pre-tokenized"):
        load_pretrain_data(str(path), "bpe")
    np.save(tmp_path / "big.npy", np.array([1, 2, 999], dtype=np.uint16))
    with pytest.raises(DataError, match="not below the vocab size"):
        load_pretrain_data(str(tmp_path / "big.npy"), "byte")


def test_batches_are_reproducible_per_step():
    tokens = np.arange(10_000, dtype=np.uint16)
    a = Batches(tokens, batch_size=4, context=16, seed=7)
    b = Batches(tokens, batch_size=4, context=16, seed=7)
    later = b.get(5)
    for step in range(5):
        a.get(step)  # drawing earlier batches must not shift batch 5
    assert np.array_equal(a.get(5), later)
    assert later.shape == (4, 17) and later.dtype == np.int64
    assert np.all(np.diff(later, axis=1) == 1)  # contiguous windows
    assert not np.array_equal(a.get(6), later)
    assert not np.array_equal(Batches(tokens, 4, 16, seed=8).get(5), later)


def test_batches_need_a_full_window():
    with pytest.raises(DataError, match="fewer than one window"):
        Batches(np.arange(10), batch_size=2, context=10, seed=0)


def test_eval_windows_are_fixed_non_overlapping_and_spread():
    tokens = np.arange(1000)
    w = eval_windows(tokens, n_tokens=160, context=16)
    assert w.shape == (10, 17)
    assert np.all(np.diff(w[:, 0]) >= 17)
    assert w[0, 0] == 0 and w[-1, -1] == 999
    assert np.array_equal(w, eval_windows(tokens, 160, 16))
    assert eval_windows(tokens, 10**6, 16).shape == (1000 // 17, 17)  # capped by what fits


def test_concurrent_writers_leave_one_complete_file(cache):
    """Several workers encoding the same split at once all end with the same full file."""
    from concurrent.futures import ThreadPoolExecutor

    docs = [Document(f"d{i}", "lorem ipsum " * 500, "s", "") for i in range(20)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: encode_documents(docs, ByteTokenizer(), "train"), range(4)))
    assert len({r.filename for r in results}) == 1
    assert all(len(r) == 20 * (6000 + 1) for r in results)
    assert [p.name for p in (cache / "tokens").iterdir()] == [Path(results[0].filename).name]
