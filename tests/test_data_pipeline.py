"""Tokenizer, token caches, packing, evaluation windows, resume and sharding."""

import numpy as np
import pytest

import data_fixtures as fx
from fwl_jax.data import pipeline, prepare, tokenizer
from fwl_jax.data.errors import DataError
from fwl_jax.data.tokenized import TokenizedSplit
from fwl_jax.data.tokenizer import BOS_ID, EOS_ID, PAD_ID

SEQ_LEN = 16


def make_split(lengths, seed=0) -> TokenizedSplit:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(5, 300, size=int(sum(lengths))).astype(np.uint16)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return TokenizedSplit(tokens, offsets, tuple(f"d{i}" for i in range(len(lengths))))


LENGTHS = [0, 1, 15, 16, 17, 40, 3, 70, 2]


def expected_pairs(split, d):
    doc = split.document(d)
    return np.concatenate([[BOS_ID], doc]), np.concatenate([doc, [EOS_ID]])


def documents_in_rows(rows):
    """Each document run of each row: (positions, inputs, targets)."""
    for row in rows:
        for seg in np.unique(row["segment_ids"][row["segment_ids"] > 0]):
            at = row["segment_ids"] == seg
            assert np.all(np.diff(np.flatnonzero(at)) == 1), "segments are contiguous"
            pos = row["positions"][at]
            np.testing.assert_array_equal(pos, pos[0] + np.arange(at.sum()))
            yield pos, row["inputs"][at], row["targets"][at]


@pytest.mark.parametrize("shuffle", [False, True])
def test_packing_loses_no_token(shuffle):
    split = make_split(LENGTHS)
    rows = pipeline.PackedRows(split, SEQ_LEN, seed=3, shuffle=shuffle, num_epochs=2)
    for epoch in range(2):
        epoch_rows = [rows[epoch * rows.rows_per_epoch + r] for r in range(rows.rows_per_epoch)]
        # Padding only at the end of the last stream row; weights mark real pairs.
        total = sum(int(r["weights"].sum()) for r in epoch_rows)
        assert total == sum(n + 1 for n in LENGTHS)
        for row in epoch_rows:
            pad = row["weights"] == 0
            assert np.all(row["segment_ids"][pad] == 0) and np.all(row["inputs"][pad] == PAD_ID)
            assert np.all(row["segment_ids"][~pad] > 0)
            assert row["segment_ids"][0] == (1 if not pad[0] else 0)
        # Every document's pairs appear exactly once, in order: match each run to its
        # document by (first position, inputs) and rebuild documents from the pieces.
        pieces = sorted(documents_in_rows(epoch_rows), key=lambda p: (len(p[1]), p[0][0]))
        rebuilt = {d: np.full(n + 1, -1) for d, n in enumerate(LENGTHS)}
        filled = {d: np.zeros(n + 1, bool) for d, n in enumerate(LENGTHS)}
        for pos, inputs, targets in pieces:
            candidates = [d for d in rebuilt
                          if pos[-1] < len(rebuilt[d]) and not filled[d][pos].any()
                          and np.array_equal(expected_pairs(split, d)[0][pos], inputs)
                          and np.array_equal(expected_pairs(split, d)[1][pos], targets)]
            assert candidates, "a run matches no document"
            filled[candidates[0]][pos] = True
        assert all(f.all() for f in filled.values())


def test_rows_follow_the_seeded_document_order():
    split = make_split(LENGTHS)
    rows = pipeline.PackedRows(split, SEQ_LEN, seed=0, shuffle=False)
    stream_inputs = np.concatenate([rows[r]["inputs"] for r in range(rows.rows_per_epoch)])
    expected = np.concatenate([expected_pairs(split, d)[0] for d in range(len(LENGTHS))])
    np.testing.assert_array_equal(stream_inputs[:len(expected)], expected)
    shuffled = pipeline.PackedRows(split, SEQ_LEN, seed=0, shuffle=True, num_epochs=2)
    first = [shuffled[r]["inputs"] for r in range(shuffled.rows_per_epoch)]
    second = [shuffled[shuffled.rows_per_epoch + r]["inputs"] for r in range(shuffled.rows_per_epoch)]
    assert not all(np.array_equal(a, b) for a, b in zip(first, second)), "epochs reshuffle"


def test_resume_gives_the_next_batch():
    split = make_split(LENGTHS * 5)
    iterator = pipeline.train_iterator(split, SEQ_LEN, 4, seed=1)
    for _ in range(7):
        next(iterator)
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(3)]
    restored = pipeline.train_iterator(split, SEQ_LEN, 4, seed=1)
    restored.set_state(state)
    for want in expected:
        got = next(restored)
        for field in pipeline.FIELDS:
            np.testing.assert_array_equal(got[field], want[field])


def test_two_processes_cover_the_data_without_overlap():
    split = make_split(LENGTHS * 4)
    batch, steps = 4, 6
    single = list(pipeline.train_dataset(split, SEQ_LEN, batch, seed=2)[:steps])
    shares = [list(pipeline.train_dataset(split, SEQ_LEN, batch, seed=2, process_index=p,
                                          process_count=2)[:steps]) for p in range(2)]
    rows = pipeline.PackedRows(split, SEQ_LEN, seed=2)
    for step in range(steps):
        for field in pipeline.FIELDS:
            joined = np.concatenate([shares[0][step][field], shares[1][step][field]])
            np.testing.assert_array_equal(joined, single[step][field])
        assert shares[0][step]["inputs"].shape == (batch // 2, SEQ_LEN)
    # Over an epoch the two shares hold every row once.
    epoch_steps = rows.rows_per_epoch // batch
    ids = [tuple(r) for p in range(2) for b in
           pipeline.train_dataset(split, SEQ_LEN, batch, seed=2, process_index=p,
                                  process_count=2)[:epoch_steps] for r in b["inputs"]]
    every = [tuple(rows[i]["inputs"]) for i in range(epoch_steps * batch)]
    assert sorted(ids) == sorted(every) and len(ids) == len(every)
    with pytest.raises(DataError, match="multiple of the number of processes"):
        pipeline.train_dataset(split, SEQ_LEN, 3, process_count=2)


@pytest.mark.parametrize("lanes", [1, 3])
def test_eval_windows_cover_every_pair_in_order(lanes):
    split = make_split(LENGTHS)
    batches = list(pipeline.eval_batches(split, SEQ_LEN, lanes))
    got = {d: [] for d in range(len(LENGTHS))}
    for batch in batches:
        assert batch["inputs"].shape == (lanes, SEQ_LEN)
        for lane in range(lanes):
            d, w = int(batch["doc_index"][lane]), int(batch["window_index"][lane])
            real = batch["weights"][lane] == 1
            if d < 0:
                assert not real.any()
                continue
            assert w == len(got[d]), "windows of a document come in order"
            np.testing.assert_array_equal(batch["positions"][lane][real],
                                          w * SEQ_LEN + np.arange(real.sum()))
            got[d].append((batch["inputs"][lane][real], batch["targets"][lane][real]))
    for d in got:
        inputs, targets = expected_pairs(split, d)
        np.testing.assert_array_equal(np.concatenate([g[0] for g in got[d]]), inputs)
        np.testing.assert_array_equal(np.concatenate([g[1] for g in got[d]]), targets)
    assert len(batches) == pipeline.eval_schedule(split, SEQ_LEN, lanes).shape[0]


def test_eval_processes_split_the_lanes():
    split = make_split(LENGTHS)
    whole = list(pipeline.eval_batches(split, SEQ_LEN, 4))
    halves = [list(pipeline.eval_batches(split, SEQ_LEN, 2, process_index=p, process_count=2))
              for p in range(2)]
    assert len(halves[0]) == len(halves[1]) == len(whole)
    for w, a, b in zip(whole, *halves):
        np.testing.assert_array_equal(np.concatenate([a["inputs"], b["inputs"]]), w["inputs"])


def test_tokenizer_round_trip_and_errors():
    texts = [fx.prose(i, 400) for i in range(8)]
    model = tokenizer.train_tokenizer(texts, 400, seed=0)
    tok = tokenizer.Tokenizer(model)
    sample = "Come,  gentle night!\n\n  Crown é ☃\tend\n"
    ids = tok.encode([sample, texts[0]])
    assert tok.decode(ids[0]) == sample and tok.decode(ids[1]) == texts[0]
    assert tok.vocab_size == 400 and ids[0].dtype == np.int32
    assert tokenizer.train_tokenizer(texts, 400, seed=0) == model, "deterministic"
    with pytest.raises(DataError, match="vocab_size 100000.*Choose a vocab_size"):
        tokenizer.train_tokenizer(texts, 100_000)
    with pytest.raises(DataError, match="at least 300"):
        tokenizer.train_tokenizer(texts, 100)


def test_prepare_trains_once_and_caches_tokens(tmp_path):
    corpus = fx.write_text_corpus(tmp_path / "corpus")
    kwargs = dict(vocab_size=400, source=tmp_path / "corpus")
    data = prepare.prepare_dataset("text_files", tmp_path / "data", **kwargs)
    model = data.folder / "tokenizer.model"
    stamp = model.stat().st_mtime_ns, (data.folder / "train" / "tokens.bin").stat().st_mtime_ns
    for split, docs in corpus.items():
        tokenized = data.split(split)
        assert set(tokenized.doc_ids) == set(docs)
        for d, doc_id in enumerate(tokenized.doc_ids):
            assert data.tokenizer.decode(tokenized.document(d)) == docs[doc_id]
    again = prepare.prepare_dataset("text_files", tmp_path / "data", **kwargs)
    assert (model.stat().st_mtime_ns,
            (again.folder / "train" / "tokens.bin").stat().st_mtime_ns) == stamp
    assert not list(data.folder.glob(".*partial*")), "no partial files left behind"
    # Another process waits for process 0's files instead of preparing.
    other = prepare.prepare_dataset("text_files", tmp_path / "data", process_index=1,
                            process_count=2, **kwargs)
    assert other.split("test").doc_ids == data.split("test").doc_ids
    with pytest.raises(DataError, match="waited 0 s for process 0"):
        prepare.prepare_dataset("text_files", tmp_path / "other", process_index=1,
                        process_count=2, timeout_s=0, **kwargs)


def test_corrupt_token_cache_is_a_clear_error(tmp_path):
    fx.write_text_corpus(tmp_path / "corpus")
    data = prepare.prepare_dataset("text_files", tmp_path / "data", vocab_size=400,
                           source=tmp_path / "corpus")
    tokens = data.folder / "train" / "tokens.bin"
    tokens.write_bytes(tokens.read_bytes()[:10])
    with pytest.raises(DataError, match="delete it to tokenize again"):
        data.split("train")
    with pytest.raises(DataError, match="unknown split"):
        data.split("dev")


def test_prepared_caches_suffice_without_the_documents(tmp_path):
    fx.write_text_corpus(tmp_path / "corpus")
    data = prepare.prepare_dataset("text_files", tmp_path / "data", vocab_size=400,
                                   source=tmp_path / "corpus")
    for array_record in data.folder.parent.glob("*.array_record*"):
        array_record.unlink()  # e.g. only the token caches were copied to another machine
    again = prepare.prepare_dataset("text_files", tmp_path / "data", vocab_size=400,
                                    source=tmp_path / "gone")
    assert again.split("test").doc_ids == data.split("test").doc_ids
