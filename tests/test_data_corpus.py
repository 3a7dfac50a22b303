"""Corpus loading, user formats, token arrays and the by-document split."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from scaling.data.corpus import (Document, corpus_fingerprint, load_corpus, load_token_array,
                                 split_documents)
from scaling.errors import DataError


@pytest.fixture(scope="module")
def bundled():
    return load_corpus()


def test_bundled_corpus_has_three_labelled_sources(bundled):
    assert {d.source for d in bundled} == {"sotu", "austen", "melville"}
    assert {d.era for d in bundled if d.source == "sotu"} == {"18th", "19th", "20th", "21st"}
    assert {d.era for d in bundled if d.source != "sotu"} == {"19th"}
    assert len({d.id for d in bundled}) == len(bundled)
    assert sum(len(d.text) for d in bundled) > 10_000_000


def test_bundled_corpus_is_clean(bundled):
    text = "".join(d.text[:2000] + d.text[-2000:] for d in bundled)
    assert "Gutenberg" not in text
    assert "\u2019" not in text and "\u2014" not in text  # typographic punctuation mapped to ASCII
    assert not any(d.text != d.text.strip() or "  " in d.text for d in bundled)


def test_every_source_is_in_every_split(bundled):
    splits = split_documents(bundled)
    for part in (splits.train, splits.val, splits.heldout):
        assert {d.source for d in part} == {"sotu", "austen", "melville"}


def test_splits_are_disjoint_and_cover_the_corpus(bundled):
    splits = split_documents(bundled)
    ids = [{d.id for d in part} for part in (splits.train, splits.val, splits.heldout)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert len(ids[0]) + len(ids[1]) + len(ids[2]) == len(bundled)
    assert len(ids[1]) < len(ids[2]) < len(ids[0])


def test_split_does_not_depend_on_order():
    docs = [Document(f"d{i}", f"text {i}", "a" if i % 2 else "b", "") for i in range(100)]
    one = split_documents(docs)
    two = split_documents(list(reversed(docs)))
    assert {d.id for d in one.heldout} == {d.id for d in two.heldout}
    assert {d.id for d in one.val} == {d.id for d in two.val}


def test_split_is_stable_across_processes():
    """No salted hash(): a fresh interpreter with another PYTHONHASHSEED gives the same split."""
    code = ("from scaling.data.corpus import Document, split_documents as s;"
            "d=[Document(f'd{i}','t','a','') for i in range(60)];"
            "print(sorted(x.id for x in s(d).heldout))")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(outs) == 1


def test_fingerprint_keys_content():
    a = [Document("x", "hello", "s", "")]
    assert corpus_fingerprint(a) == corpus_fingerprint([Document("x", "hello", "s", "")])
    assert corpus_fingerprint(a) != corpus_fingerprint([Document("x", "hello!", "s", "")])


def test_txt_folder_labels_come_from_subfolders(tmp_path):
    (tmp_path / "poems").mkdir()
    (tmp_path / "poems" / "a.txt").write_text("roses are red", encoding="utf-8")
    (tmp_path / "loose.txt").write_text("héllo wörld", encoding="utf-8")
    docs = load_corpus(tmp_path)
    assert {(d.id, d.source) for d in docs} == {("poems/a", "poems"), ("loose", "user")}
    assert any(d.text == "héllo wörld" for d in docs)


def test_jsonl_and_parquet_files(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    lines = [{"text": "first", "label": "x"}, {"text": "second"}]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n", encoding="utf-8")
    pq.write_table(pa.table({"text": ["third", "fourth"], "label": ["y", "z"]}), tmp_path / "b.parquet")
    docs = load_corpus(tmp_path)
    assert [(d.text, d.source) for d in docs] == [("first", "x"), ("second", "user"), ("third", "y"), ("fourth", "z")]


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_corpus(tmp_path / "nope")
    with pytest.raises(DataError, match="no .txt, .jsonl or .parquet"):
        load_corpus(tmp_path)
    (tmp_path / "blank.txt").write_text("  \n", encoding="utf-8")
    with pytest.raises(DataError, match="no non-empty documents"):
        load_corpus(tmp_path)


def test_bad_json_line_names_file_and_line(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text('{"text": "ok"}\n{"text": broken}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"c\.jsonl line 2: not valid JSON"):
        load_corpus(f)
    f.write_text('{"body": "no text field"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r'line 1: expected an object with a string field "text"'):
        load_corpus(f)


def test_token_arrays_npy_and_bin(tmp_path):
    np.save(tmp_path / "t.npy", np.arange(10, dtype=np.int32))
    np.arange(10, dtype="<u2").tofile(tmp_path / "t.bin")
    for name in ("t.npy", "t.bin"):
        arr = load_token_array(tmp_path / name)
        assert arr.tolist() == list(range(10))
        assert not arr.flags.writeable


@pytest.mark.parametrize("array, message", [
    (np.zeros(0, dtype=np.uint16), "empty"),
    (np.zeros((2, 3), dtype=np.uint16), "1-D"),
    (np.zeros(4, dtype=np.float32), "integer"),
    (np.array([1, -1], dtype=np.int32), "negative"),
])
def test_bad_token_arrays(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(DataError, match=message):
        load_token_array(tmp_path / "bad.npy")


def test_empty_bin_is_rejected(tmp_path):
    (tmp_path / "e.bin").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        load_token_array(tmp_path / "e.bin")
