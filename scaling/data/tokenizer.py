"""Tokenizers: raw UTF-8 bytes, or a byte-level BPE trained on the corpus with `tokenizers`.

Both speak the `Tokenizer` protocol. Specials: `eos_id` ends every document (and every
fine-tuning completion), `pad_id` fills batches; neither appears in encoded text.
"""
from __future__ import annotations

import hashlib
import re
from typing import Iterable, Protocol, Sequence, runtime_checkable

import numpy as np

from scaling.data.cache import atomic_write, cache_dir
from scaling.data.corpus import Document, corpus_fingerprint
from scaling.errors import ConfigError, DataError

DEFAULT_BPE_VOCAB = 4096
EOS_TOKEN, PAD_TOKEN = "<|eos|>", "<|pad|>"


@runtime_checkable
class Tokenizer(Protocol):
    eos_id: int
    pad_id: int
    vocab_size: int
    fingerprint: str  # identifies the exact mapping text <-> ids (used in cache keys)

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes 0..255, then eos = 256 and pad = 257."""

    eos_id = 256
    pad_id = 257
    vocab_size = 258
    fingerprint = "byte-v1"
    name = "byte"

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_array(self, text: str) -> np.ndarray:
        """Fast path for long texts (same ids as `encode`)."""
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)

    def decode(self, ids: Sequence[int]) -> str:
        """Specials and out-of-range ids are dropped; invalid UTF-8 becomes U+FFFD."""
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return "ByteTokenizer()"


class BPETokenizer:
    """Byte-level BPE (GPT-2 style pre-tokenization, no prefix space) from HF `tokenizers`.
    Ids 0 and 1 are eos and pad; the 256 byte symbols follow, then the learned merges."""

    eos_id = 0
    pad_id = 1

    def __init__(self, backend) -> None:  # a tokenizers.Tokenizer
        self._tok = backend
        self.vocab_size = backend.get_vocab_size()
        self.fingerprint = "bpe-" + hashlib.sha256(backend.to_str().encode("utf-8")).hexdigest()[:32]
        self.name = f"bpe:{self.vocab_size}"

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> "BPETokenizer":
        from tokenizers import Tokenizer as Backend, decoders, models, pre_tokenizers, trainers

        backend = Backend(models.BPE())
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[EOS_TOKEN, PAD_TOKEN],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        backend.train_from_iterator(texts, trainer=trainer)
        return cls(backend)

    @classmethod
    def from_json(cls, text: str) -> "BPETokenizer":
        from tokenizers import Tokenizer as Backend

        return cls(Backend.from_str(text))

    def to_json(self) -> str:
        return self._tok.to_str()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_array(self, text: str) -> np.ndarray:
        return np.asarray(self.encode(text), dtype=np.int64)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        """Specials are dropped; ids that end mid-character decode to U+FFFD."""
        return self._tok.decode([int(i) for i in ids if 0 <= int(i) < self.vocab_size], skip_special_tokens=True)

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"


def parse_tokenizer_name(name: str) -> tuple[str, int | None]:
    """"byte" -> ("byte", None); "bpe" -> ("bpe", 4096); "bpe:<vocab>" -> ("bpe", vocab)."""
    if name == "byte":
        return "byte", None
    if name == "bpe":
        return "bpe", DEFAULT_BPE_VOCAB
    m = re.fullmatch(r"bpe:(\d+)", name)
    if m:
        vocab = int(m.group(1))
        if not 258 <= vocab <= 2**31 - 1:
            raise ConfigError(f"tokenizer {name!r}: BPE vocab must be at least 258 (256 bytes + eos + pad)")
        return "bpe", vocab
    raise ConfigError(f"tokenizer {name!r}: expected 'byte', 'bpe' or 'bpe:<vocab size>' (e.g. 'bpe:4096')")


def get_tokenizer(name: str, docs: Sequence[Document] | None = None) -> Tokenizer:
    """Build a tokenizer by name. BPE is trained on `docs` (pass the *train* split) and cached
    at <cache>/tokenizers/bpe-<vocab>-<corpus fingerprint>.json."""
    kind, vocab = parse_tokenizer_name(name)
    if kind == "byte":
        return ByteTokenizer()
    if not docs:
        raise DataError(f"tokenizer {name!r}: BPE must be trained on documents, and none were given "
                        f"(a pre-tokenized array only works with tokenizer 'byte')")
    path = cache_dir() / "tokenizers" / f"bpe-{vocab}-{corpus_fingerprint(docs)[:32]}.json"
    if path.is_file():
        return BPETokenizer.from_json(path.read_text(encoding="utf-8"))
    tok = BPETokenizer.train((d.text for d in docs), vocab)
    atomic_write(path, tok.to_json().encode("utf-8"))
    return tok
