"""Token arrays for pretraining: encoded once, cached on disk, memory-mapped read-only so
several worker processes share the same pages; plus deterministic batch sampling.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Sequence

import numpy as np

from scaling.data.cache import atomic_write, cache_dir
from scaling.data.corpus import (BUNDLED_NAME, Document, corpus_fingerprint, is_token_array_path, load_corpus,
                                 load_token_array, split_documents)
from scaling.data.tokenizer import ByteTokenizer, Tokenizer, get_tokenizer, parse_tokenizer_name
from scaling.errors import ConfigError, DataError

__all__ = ["cache_dir", "encode_documents", "PretrainData", "load_pretrain_data", "Batches", "eval_windows",
           "POSITIONAL_VAL_FRAC"]

POSITIONAL_VAL_FRAC = 0.02


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def encode_documents(docs: Sequence[Document], tokenizer: Tokenizer, split: str = "all") -> np.memmap:
    """Tokens of `docs`, each document followed by eos, as a read-only memmap of uint16
    (uint32 when the vocabulary exceeds 65536).

    Cached at <cache>/tokens/<key>.bin with key = sha256(corpus fingerprint, tokenizer
    fingerprint, split name): the same content gives the same file, other content another one.
    """
    if not docs:
        raise DataError(f"encode_documents: split {split!r} has no documents to encode")
    dtype = token_dtype(tokenizer.vocab_size)
    key = hashlib.sha256(f"{corpus_fingerprint(docs)}|{tokenizer.fingerprint}|{split}|{dtype.str}".encode()).hexdigest()
    path = cache_dir() / "tokens" / f"{key}.bin"
    if not (path.is_file() and path.stat().st_size > 0 and path.stat().st_size % dtype.itemsize == 0):
        atomic_write(path, _encode(docs, tokenizer, dtype).tobytes())
    return np.memmap(path, dtype=dtype, mode="r")


def _encode(docs: Sequence[Document], tokenizer: Tokenizer, dtype: np.dtype) -> np.ndarray:
    if hasattr(tokenizer, "encode_batch"):
        pieces = [np.asarray(ids, dtype=dtype) for ids in tokenizer.encode_batch([d.text for d in docs])]
    elif hasattr(tokenizer, "encode_array"):
        pieces = [tokenizer.encode_array(d.text) for d in docs]
    else:
        pieces = [np.asarray(tokenizer.encode(d.text), dtype=np.int64) for d in docs]
    out = np.empty(sum(len(p) + 1 for p in pieces), dtype=dtype)
    pos = 0
    for p in pieces:
        out[pos:pos + len(p)] = p
        out[pos + len(p)] = tokenizer.eos_id
        pos += len(p) + 1
    return out


@dataclass(frozen=True, eq=False)  # holds arrays: compare by identity
class PretrainData:
    """Everything pretraining and evaluation need from the corpus.

    train, val: 1-D token arrays (read-only memmaps). heldout_docs: documents never pretrained
    on (for the `source` task and the linear probe); empty for a pre-tokenized corpus.
    fingerprint: content key of corpus + tokenizer (+ split rule)."""
    tokenizer: Tokenizer
    train: np.ndarray = field(repr=False)
    val: np.ndarray = field(repr=False)
    heldout_docs: list[Document] = field(repr=False)
    corpus_name: str
    fingerprint: str
    notes: tuple[str, ...] = ()  # how the split was made where it is not the default by-document one


@lru_cache(maxsize=8)
def load_pretrain_data(corpus: str | None, tokenizer: str) -> PretrainData:
    """Load, split and tokenize a corpus; cached on disk and reused within the process.

    corpus: None (the bundled corpus), a folder/file of .txt/.jsonl/.parquet documents (split
    by document with `split_documents`), or a pre-tokenized .npy / .bin (uint16) array. For a
    token array the last 2% of tokens (by position) are `val`, the rest `train`, and there are
    no held-out documents, so the `source` task and the probe raise DataError; only tokenizer
    'byte' can be used with it (a BPE vocabulary cannot be rebuilt from ids), and every id must be
    below its vocab size. A text corpus whose documents are too few to put any in `val` (fewer
    than 3 per label) falls back to the same positional 2% split of the train tokens.
    """
    if corpus is not None and is_token_array_path(corpus):
        return _from_token_array(corpus, tokenizer)
    docs = load_corpus(corpus)
    splits = split_documents(docs)
    tok = get_tokenizer(tokenizer, splits.train)
    train = encode_documents(splits.train, tok, "train")
    notes: tuple[str, ...] = ()
    if splits.val:
        val = encode_documents(splits.val, tok, "val")
    else:
        train, val = _positional_split(train)
        notes = (f"too few documents per label to hold some out: val is the last {POSITIONAL_VAL_FRAC:.0%} of the "
                 f"train tokens by position",)
    name = BUNDLED_NAME if corpus is None else str(corpus)
    fp = hashlib.sha256(f"{corpus_fingerprint(docs)}|{tok.fingerprint}|split-v1".encode()).hexdigest()
    return PretrainData(tok, train, val, splits.heldout, name, fp, notes)


def _positional_split(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n_val = max(1, int(round(len(tokens) * POSITIONAL_VAL_FRAC)))
    if len(tokens) - n_val < 2:
        raise DataError(f"corpus has only {len(tokens)} tokens: too few to split into train and val")
    return tokens[:-n_val], tokens[-n_val:]


def _from_token_array(path: str, tokenizer: str) -> PretrainData:
    kind, _ = parse_tokenizer_name(tokenizer)
    if kind != "byte":
        raise ConfigError(f"tokenizer {tokenizer!r}: a pre-tokenized corpus ({path}) can only be used with "
                          f"tokenizer 'byte' (or ids below 258); BPE needs text to train on")
    arr = load_token_array(path)
    tok = ByteTokenizer()
    top = int(arr.max())
    if top >= tok.vocab_size:
        raise DataError(f"token array {path}: id {top} is not below the vocab size {tok.vocab_size} of tokenizer "
                        f"{tokenizer!r}")
    train, val = _positional_split(arr)
    h = hashlib.sha256()
    h.update(str(arr.dtype).encode())
    h.update(np.ascontiguousarray(arr).data)
    fp = hashlib.sha256(f"{h.hexdigest()}|{tok.fingerprint}|positional-{POSITIONAL_VAL_FRAC}".encode()).hexdigest()
    note = f"pre-tokenized corpus: val is the last {POSITIONAL_VAL_FRAC:.0%} of tokens by position; no held-out documents"
    return PretrainData(tok, train, val, [], str(path), fp, (note,))


# ---------------------------------------------------------------- batches


def _check_length(tokens: np.ndarray, context: int, what: str) -> None:
    if context < 1:
        raise ConfigError(f"{what}: context must be at least 1, got {context}")
    if len(tokens) < context + 1:
        raise DataError(f"{what}: {len(tokens)} tokens are fewer than one window of context + 1 = {context + 1}")


class Batches:
    """Random training windows, reproducible per step.

    `get(step)` draws `batch_size` windows of `context + 1` tokens (inputs and shifted targets)
    from a generator seeded by (seed, step), so batch k is the same whether or not batches
    0..k-1 were drawn: resumes and several models trained side by side see identical data.
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, context: int, seed: int = 0) -> None:
        _check_length(tokens, context, "Batches")
        if batch_size < 1:
            raise ConfigError(f"Batches: batch_size must be at least 1, got {batch_size}")
        self.tokens = tokens
        self.batch_size = batch_size
        self.context = context
        self.seed = seed
        self._offsets = np.arange(context + 1)

    def starts(self, step: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, step])
        return rng.integers(0, len(self.tokens) - self.context, size=self.batch_size)

    def get(self, step: int) -> np.ndarray:
        """int64 array (batch_size, context + 1)."""
        return np.asarray(self.tokens[self.starts(step)[:, None] + self._offsets], dtype=np.int64)


def eval_windows(tokens: np.ndarray, n_tokens: int, context: int) -> np.ndarray:
    """A fixed set of non-overlapping windows, int64 (n, context + 1), evenly spaced over the
    whole array, with n = max(1, n_tokens // context) capped by what fits."""
    _check_length(tokens, context, "eval_windows")
    n = min(max(1, n_tokens // context), len(tokens) // (context + 1))
    starts = np.linspace(0, len(tokens) - (context + 1), n).round().astype(np.int64)
    return np.asarray(tokens[starts[:, None] + np.arange(context + 1)], dtype=np.int64)
