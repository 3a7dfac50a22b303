"""Pretraining corpora: the bundled one, user folders of text, pre-tokenized arrays, and the
split of documents into train / val / heldout.

The split is by document (never by random bytes) so `heldout` documents are truly unseen in
pretraining: they feed the `source` task and the linear probe.
"""
from __future__ import annotations

import hashlib
import json
import lzma
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from scaling.errors import DataError

BUNDLED_NAME = "bundled"
TEXT_SUFFIXES = (".txt", ".jsonl", ".parquet")
TOKEN_SUFFIXES = (".npy", ".bin")


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    source: str  # label: "sotu" | "austen" | "melville" for the bundled corpus, user label otherwise
    era: str  # e.g. "19th" (century) for the bundled corpus, "" when unknown
    title: str = ""


@dataclass(frozen=True)
class CorpusSplits:
    train: list[Document]
    val: list[Document]
    heldout: list[Document]


# ---------------------------------------------------------------- loading


def load_corpus(path: str | Path | None = None) -> list[Document]:
    """Load documents. None = the bundled corpus (offline, from package data).

    A path may be one file or a folder searched recursively for:
      .txt      one document per file; label = name of the subfolder under `path` holding it, else "user"
      .jsonl    one document per line: {"text": ..., optional "label" or "source", optional "id"}
      .parquet  column "text", optional column "label" or "source" (needs pyarrow)
    """
    if path is None:
        return list(_bundled())
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"corpus {root}: no such file or folder")
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
    if root.is_file() and root.suffix not in TEXT_SUFFIXES:
        raise DataError(f"corpus {root}: expected a .txt, .jsonl or .parquet file (or a folder of them); "
                        f".npy/.bin token arrays are read by load_token_array")
    if not files:
        raise DataError(f"corpus {root}: folder holds no .txt, .jsonl or .parquet files")
    docs: list[Document] = []
    for file in files:
        rel = file.relative_to(root) if root.is_dir() else Path(file.name)
        docs.extend(_read_file(file, rel))
    if not docs:
        raise DataError(f"corpus {root}: no non-empty documents found in {len(files)} file(s)")
    ids = [d.id for d in docs]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataError(f"corpus {root}: document id {dup!r} occurs more than once")
    return docs


@lru_cache(maxsize=1)
def _bundled_cached() -> tuple[Document, ...]:
    blob = resources.files("scaling.data").joinpath("corpus.jsonl.xz").read_bytes()
    lines = lzma.decompress(blob).decode("utf-8").splitlines()
    return tuple(Document(**json.loads(line)) for line in lines)


def _bundled() -> Iterator[Document]:
    return iter(_bundled_cached())


def _read_file(file: Path, rel: Path) -> list[Document]:
    label = rel.parts[0] if len(rel.parts) > 1 else "user"
    stem = rel.with_suffix("").as_posix()
    if file.suffix == ".txt":
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"corpus file {file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except OSError as exc:
            raise DataError(f"corpus file {file}: cannot read ({exc.strerror or exc})") from None
        return [Document(id=stem, text=text, source=label, era="")] if text.strip() else []
    if file.suffix == ".jsonl":
        return list(_read_jsonl(file, stem))
    return list(_read_parquet(file, stem))


def iter_jsonl(file: Path, what: str, example: str) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for each non-blank line of a JSONL file; an unreadable file, a
    line that is not UTF-8 or not JSON, or JSON nested too deeply to parse is a DataError naming
    `what` (e.g. "corpus file"), the file, the line and `example`."""
    try:
        fh = file.open("rb")
    except OSError as exc:
        raise DataError(f"{what} {file}: cannot read ({exc.strerror or exc})") from None
    with fh:
        for lineno, raw in enumerate(_lines(fh, what, file), start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{what} {file} line {lineno}: not UTF-8 text ({exc.reason} at byte {exc.start} "
                                f"of the line); expected JSON lines like {example}") from None
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{what} {file} line {lineno}: not valid JSON ({exc.msg}); "
                                f"expected an object like {example}") from None
            except RecursionError:
                raise DataError(f"{what} {file} line {lineno}: JSON nested too deeply to read; "
                                f"expected an object like {example}") from None
            yield lineno, value


def _lines(fh, what: str, file: Path) -> Iterator[bytes]:
    try:
        yield from fh
    except OSError as exc:
        raise DataError(f"{what} {file}: cannot read ({exc.strerror or exc})") from None


def _read_jsonl(file: Path, stem: str) -> Iterator[Document]:
    for lineno, rec in iter_jsonl(file, "corpus file", '{"text": "...", "label": "..."}'):
        if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
            raise DataError(f'corpus file {file} line {lineno}: expected an object with a string field "text"')
        if rec["text"].strip():
            yield _record_document(rec, f"{stem}:{lineno}", f"{file} line {lineno}")


def _read_parquet(file: Path, stem: str) -> Iterator[Document]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"corpus file {file}: reading .parquet needs pyarrow (pip install pyarrow)") from None
    try:
        table = pq.read_table(file)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise DataError(f"corpus file {file}: not a readable parquet file ({exc})") from None
    if "text" not in table.column_names:
        raise DataError(f'corpus file {file}: expected a column "text", found {table.column_names}')
    for row, rec in enumerate(table.to_pylist()):
        if not isinstance(rec["text"], str):
            if rec["text"] is None:
                continue
            raise DataError(f'corpus file {file} row {row}: column "text" must hold strings')
        if rec["text"].strip():
            yield _record_document(rec, f"{stem}:{row}", f"{file} row {row}")


def _record_document(rec: dict, default_id: str, where: str) -> Document:
    label = rec.get("label", rec.get("source", "user"))
    if not isinstance(label, (str, int)):
        raise DataError(f'corpus {where}: field "label" must be a string')
    return Document(id=str(rec.get("id", default_id)), text=rec["text"], source=str(label),
                    era=str(rec.get("era", "")), title=str(rec.get("title", "")))


def load_token_array(path: str | Path) -> np.ndarray:
    """A pre-tokenized corpus: .npy (any integer dtype) or raw .bin of little-endian uint16.
    Returned memory-mapped read-only; validated 1-D, integer, non-empty, non-negative."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"token array {file}: no such file")
    if file.suffix == ".npy":
        try:
            arr = np.load(file, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            raise DataError(f"token array {file}: not a readable .npy file ({exc})") from None
    elif file.suffix == ".bin":
        if file.stat().st_size % 2:
            raise DataError(f"token array {file}: size {file.stat().st_size} bytes is odd; expected raw uint16 tokens")
        if file.stat().st_size == 0:
            raise DataError(f"token array {file}: empty; expected raw uint16 tokens")
        arr = np.memmap(file, dtype="<u2", mode="r")
    else:
        raise DataError(f"token array {file}: expected a .npy or .bin (raw uint16) file")
    if arr.ndim != 1:
        raise DataError(f"token array {file}: expected a 1-D array of token ids, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"token array {file}: expected integer token ids, got dtype {arr.dtype}")
    if arr.size == 0:
        raise DataError(f"token array {file}: empty; expected at least one token")
    if np.issubdtype(arr.dtype, np.signedinteger) and int(arr.min()) < 0:
        raise DataError(f"token array {file}: negative token id {int(arr.min())}")
    return arr


def is_token_array_path(path: str | Path) -> bool:
    return Path(path).suffix in TOKEN_SUFFIXES


# ---------------------------------------------------------------- splitting and fingerprints


def unit_hash(text: str) -> float:
    """A number in [0, 1) from sha256: stable across runs, machines and Python versions."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2**64


def split_documents(docs: Iterable[Document], val_frac: float = 0.02, heldout_frac: float = 0.04) -> CorpusSplits:
    """Deterministic split by document, without an RNG.

    Within each source, documents are ranked by sha256 of their id; the first
    max(1, round(val_frac * n)) go to `val`, the next max(1, round(heldout_frac * n)) to
    `heldout`, the rest to `train`. So every source with at least 3 documents appears in every
    split, and a document's split depends only on its id and its source's size. A source with
    fewer than 3 documents goes wholly to `train` (a split by document is impossible there).
    Output order follows the input order.
    """
    if not (0 <= val_frac < 1 and 0 <= heldout_frac < 1 and val_frac + heldout_frac < 1):
        raise DataError(f"split_documents: expected 0 <= val_frac, heldout_frac and val_frac + heldout_frac < 1, "
                        f"got {val_frac}, {heldout_frac}")
    docs = list(docs)
    by_source: dict[str, list[Document]] = defaultdict(list)
    for d in docs:
        by_source[d.source].append(d)
    where: dict[str, str] = {}
    for members in by_source.values():
        ranked = sorted(members, key=lambda d: (unit_hash(d.id), d.id))
        n = len(ranked)
        n_val = max(1, round(val_frac * n)) if val_frac > 0 and n >= 3 else 0
        n_held = max(1, round(heldout_frac * n)) if heldout_frac > 0 and n >= 3 else 0
        for i, d in enumerate(ranked):
            where[d.id] = "val" if i < n_val else "heldout" if i < n_val + n_held else "train"
    return CorpusSplits(
        train=[d for d in docs if where[d.id] == "train"],
        val=[d for d in docs if where[d.id] == "val"],
        heldout=[d for d in docs if where[d.id] == "heldout"],
    )


def corpus_fingerprint(docs: Iterable[Document]) -> str:
    """sha256 over ids, labels and texts in order: a content key for caches."""
    h = hashlib.sha256()
    for d in docs:
        for part in (d.id, d.source, d.era, d.text):
            b = part.encode("utf-8")
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
    return h.hexdigest()
