"""Tests of prepare_data.py: python -m pytest -q test_prepare_data.py

They run offline. Downloads, the Hugging Face hub and tiktoken's vocabulary download are replaced by
fakes, and socket connections raise. Tests that need the real GPT-2 BPE read it from
TIKTOKEN_CACHE_DIR and are skipped when that folder lacks tiktoken's r50k_base file.
"""

import hashlib
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

# Set before `datasets` is first imported, which happens inside prepare_data's record readers.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np
import pytest

import prepare_data
from prepare_data import (
    PrepareDataError,
    decoder_from_meta,
    dtype_for_vocab,
    encoder_from_meta,
    load_meta,
    prepare,
    scan_utf8_file,
    split_text_for_bpe,
)

REPO = Path(__file__).resolve().parent
# tiktoken names a cached file by the SHA-1 of its download address.
R50K_URL = "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken"
R50K_CACHE_FILE = hashlib.sha1(R50K_URL.encode()).hexdigest()

SAMPLE_TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\n"
    "All:\nResolved. resolved. Caf\u00e9 \u00e0 la cr\u00e8me, \u65e5\u672c\u8a9e, \U0001f600!\n"
) * 8


# --------------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Make any socket connection fail, so that a test that would reach the network fails instead."""

    def reject_connection(*args, **kwargs):
        raise OSError("network access is disabled in test_prepare_data.py")

    monkeypatch.setattr(socket.socket, "connect", reject_connection)
    monkeypatch.setattr(socket, "create_connection", reject_connection)


@pytest.fixture
def gpt2_encoding():
    """The real GPT-2 BPE from TIKTOKEN_CACHE_DIR, or a skip when it is not cached."""
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR")
    if not cache_dir or not (Path(cache_dir) / R50K_CACHE_FILE).is_file():
        pytest.skip("GPT-2 BPE not cached: set TIKTOKEN_CACHE_DIR to a folder with tiktoken's r50k_base file")
    return prepare_data.load_gpt2_encoding()


class FakeEncoding:
    """Stand-in for the GPT-2 encoding: one id per UTF-8 byte, with GPT-2's vocabulary size and EOT id."""

    n_vocab = 50257
    eot_token = 50256

    def __init__(self):
        self.threads = set()

    def encode_ordinary(self, text):
        self.threads.add(threading.current_thread().name)
        return list(text.encode("utf-8"))

    def decode(self, ids):
        return bytes(ids).decode("utf-8")


@pytest.fixture
def fake_gpt2(monkeypatch):
    fake = FakeEncoding()
    monkeypatch.setattr(prepare_data, "_GPT2_ENCODINGS", {prepare_data.TIKTOKEN_ENCODING: fake})
    return fake


class FakeStream:
    """Stand-in for a streaming datasets.IterableDataset over a list or generator of records."""

    def __init__(self, records, column_names=None):
        self.records = records
        self.column_names = column_names
        self.selected = None

    def select_columns(self, names):
        self.selected = names
        return self

    def iter(self, batch_size):
        batch = []
        for record in self.records:
            batch.append(record)
            if len(batch) == batch_size:
                yield self._columns(batch)
                batch = []
        if batch:
            yield self._columns(batch)

    def _columns(self, records):
        names = self.selected or list(records[0])
        return {name: [record.get(name) for record in records] for name in names}


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


def write_jsonl(path: Path, records: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        for record in records:
            file.write(json.dumps(record) + "\n")
    return path


def read_split(data_dir: Path, split: str) -> np.ndarray:
    """Read a split the way train.py does: a memmap with the dtype from meta.json."""
    meta = load_meta(data_dir)
    path = data_dir / f"{split}.bin"
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=meta["dtype"])
    return np.array(np.memmap(path, dtype=np.dtype(meta["dtype"]).newbyteorder("<"), mode="r"))


def snapshot(folder: Path) -> dict:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def leftover_temp_dirs(parent: Path) -> list:
    return [path.name for path in parent.iterdir() if path.name.endswith(".tmp")]


def val_draws(seed: int, count: int, val_fraction: float = 0.1) -> list:
    """The documented rule, written out independently: record k goes to val when draw k < val_fraction."""
    rng = random.Random(seed)
    return [rng.random() < val_fraction for _ in range(count)]


# --------------------------------------------------------------------------------------------------
# Single text, character tokenizer


def test_char_round_trip_and_meta(tmp_path, capsys):
    source = write_text(tmp_path / "input.txt", SAMPLE_TEXT)
    data_dir = tmp_path / "data"
    result = prepare(["--input", str(source), "--data_dir", str(data_dir)])

    meta = load_meta(data_dir)
    assert meta == result.meta
    assert meta["dataset"] == "shakespeare_char"
    assert meta["tokenizer"] == "char"
    assert meta["tiktoken_encoding"] is None
    assert meta["eot_token"] is None
    assert meta["vocab"] == sorted(set(SAMPLE_TEXT))
    assert meta["vocab_size"] == len(set(SAMPLE_TEXT))
    assert meta["dtype"] == "uint16"
    assert meta["train_tokens"] + meta["val_tokens"] == len(SAMPLE_TEXT)
    assert meta["source"] == str(source)
    assert meta["sha256"] == hashlib.sha256(SAMPLE_TEXT.encode("utf-8")).hexdigest()
    assert meta["val_fraction"] == 0.1
    assert meta["seed"] == prepare_data.DEFAULT_SEED

    train, val = read_split(data_dir, "train"), read_split(data_dir, "val")
    assert len(train) == meta["train_tokens"]
    assert len(val) == meta["val_tokens"]
    decode = decoder_from_meta(meta)
    assert decode(np.concatenate([train, val])) == SAMPLE_TEXT
    assert encoder_from_meta(meta)(SAMPLE_TEXT) == np.concatenate([train, val]).tolist()
    assert (data_dir / "train.bin").stat().st_size == 2 * meta["train_tokens"]

    # A local copy that is not the standard input.txt is used, with a warning naming both hashes.
    assert "warning" in capsys.readouterr().err


def test_single_text_split_contiguous(tmp_path):
    source = write_text(tmp_path / "input.txt", SAMPLE_TEXT)
    data_dir = tmp_path / "data"
    prepare(["--input", str(source), "--data_dir", str(data_dir)])

    n_train = int(len(SAMPLE_TEXT) * 0.9)
    decode = decoder_from_meta(load_meta(data_dir))
    assert decode(read_split(data_dir, "train")) == SAMPLE_TEXT[:n_train]
    assert decode(read_split(data_dir, "val")) == SAMPLE_TEXT[n_train:]


def test_single_text_ignores_seed(tmp_path):
    source = write_text(tmp_path / "input.txt", SAMPLE_TEXT)
    prepare(["--input", str(source), "--data_dir", str(tmp_path / "a"), "--seed", "1"])
    prepare(["--input", str(source), "--data_dir", str(tmp_path / "b"), "--seed", "2"])
    assert (tmp_path / "a" / "train.bin").read_bytes() == (tmp_path / "b" / "train.bin").read_bytes()
    assert (tmp_path / "a" / "val.bin").read_bytes() == (tmp_path / "b" / "val.bin").read_bytes()


def test_standard_input_has_no_warning(tmp_path, monkeypatch, capsys):
    source = write_text(tmp_path / "input.txt", SAMPLE_TEXT)
    monkeypatch.setattr(prepare_data, "TINY_SHAKESPEARE_SHA256", hashlib.sha256(source.read_bytes()).hexdigest())
    prepare(["--input", str(source), "--data_dir", str(tmp_path / "data")])
    assert "warning" not in capsys.readouterr().err


def test_default_data_dir(tmp_path, monkeypatch):
    source = write_text(tmp_path / "input.txt", SAMPLE_TEXT)
    monkeypatch.chdir(tmp_path)
    prepare(["--input", str(source)])
    assert (tmp_path / "data" / "shakespeare_char" / "meta.json").is_file()


def test_bom_dropped_and_crlf_kept(tmp_path):
    text = "line one\r\nline two\r\n" * 20
    source = tmp_path / "input.txt"
    source.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    data_dir = tmp_path / "data"
    prepare(["--dataset", "custom", "--input", str(source), "--data_dir", str(data_dir)])

    meta = load_meta(data_dir)
    assert "\ufeff" not in meta["vocab"]
    assert "\r" in meta["vocab"]
    ids = np.concatenate([read_split(data_dir, "train"), read_split(data_dir, "val")])
    assert decoder_from_meta(meta)(ids) == text


def test_max_tokens_single_text(tmp_path):
    source = write_text(tmp_path / "input.txt", SAMPLE_TEXT)
    data_dir = tmp_path / "data"
    prepare(["--input", str(source), "--data_dir", str(data_dir), "--max_tokens", "100"])
    meta = load_meta(data_dir)
    assert meta["train_tokens"] + meta["val_tokens"] == 100
    assert meta["vocab"] == sorted(set(SAMPLE_TEXT[:100]))


def test_folder_with_one_file_is_single_text(tmp_path):
    write_text(tmp_path / "books" / "only.txt", SAMPLE_TEXT)
    prepare(["--dataset", "custom", "--input", str(tmp_path / "books"), "--data_dir", str(tmp_path / "a")])
    prepare(["--dataset", "custom", "--input", str(tmp_path / "books" / "only.txt"), "--data_dir", str(tmp_path / "b")])
    assert snapshot(tmp_path / "a")["train.bin"] == snapshot(tmp_path / "b")["train.bin"]
    assert snapshot(tmp_path / "a")["val.bin"] == snapshot(tmp_path / "b")["val.bin"]


# --------------------------------------------------------------------------------------------------
# Vocabulary size and dtype


def test_dtype_for_vocab_boundary():
    assert dtype_for_vocab(65) == "uint16"
    assert dtype_for_vocab(50257) == "uint16"
    assert dtype_for_vocab(65536) == "uint16"
    assert dtype_for_vocab(65537) == "uint32"


def test_large_char_vocab_uses_uint32(tmp_path):
    # 70,000 distinct code points, skipping the surrogate range that UTF-8 cannot encode.
    points = [point for point in range(0x20, 0x20 + 72_100) if not 0xD800 <= point <= 0xDFFF][:70_000]
    text = "".join(chr(point) for point in points)
    source = write_text(tmp_path / "wide.txt", text)
    data_dir = tmp_path / "data"
    prepare(["--dataset", "custom", "--input", str(source), "--data_dir", str(data_dir)])

    meta = load_meta(data_dir)
    assert meta["vocab_size"] == 70_000
    assert meta["dtype"] == "uint32"
    assert (data_dir / "train.bin").stat().st_size == 4 * meta["train_tokens"]
    train, val = read_split(data_dir, "train"), read_split(data_dir, "val")
    assert train.dtype == np.uint32
    assert int(val.max()) == 69_999
    assert decoder_from_meta(meta)(np.concatenate([train, val])) == text


def test_large_char_vocab_documents_use_uint32(tmp_path):
    points = [point for point in range(0x4E00, 0x4E00 + 68_000) if not 0xD800 <= point <= 0xDFFF]
    text = "".join(chr(point) for point in points)
    documents = [text[i : i + 3000] for i in range(0, len(text), 3000)]
    for i, document in enumerate(documents):
        write_text(tmp_path / "docs" / f"{i:03d}.txt", document)
    data_dir = tmp_path / "data"
    prepare(["--dataset", "custom", "--input", str(tmp_path / "docs"), "--data_dir", str(data_dir)])

    meta = load_meta(data_dir)
    assert meta["vocab_size"] == len(points)
    assert meta["dtype"] == "uint32"
    decode = decoder_from_meta(meta)
    in_val = val_draws(meta["seed"], len(documents))
    assert decode(read_split(data_dir, "train")) == "".join(d for d, v in zip(documents, in_val) if not v)
    assert decode(read_split(data_dir, "val")) == "".join(d for d, v in zip(documents, in_val) if v)


# --------------------------------------------------------------------------------------------------
# GPT-2 BPE


def test_gpt2_single_text_literal_endoftext(tmp_path, gpt2_encoding):
    text = "Before <|endoftext|> after.\nThe token <|endoftext|> is plain text here.\n" * 30
    source = write_text(tmp_path / "input.txt", text)
    data_dir = tmp_path / "data"
    prepare(["--dataset", "custom", "--input", str(source), "--tokenizer", "gpt2", "--data_dir", str(data_dir)])

    meta = load_meta(data_dir)
    assert meta["tokenizer"] == "gpt2"
    assert meta["tiktoken_encoding"] == "r50k_base"
    assert meta["vocab"] is None
    assert meta["vocab_size"] == 50257
    assert meta["eot_token"] == 50256
    assert meta["dtype"] == "uint16"
    ids = np.concatenate([read_split(data_dir, "train"), read_split(data_dir, "val")])
    assert 50256 not in ids
    assert ids.tolist() == gpt2_encoding.encode_ordinary(text)
    assert decoder_from_meta(meta)(ids) == text
    assert encoder_from_meta(meta)(text) == ids.tolist()


def test_shakespeare_bpe_dataset(tmp_path, gpt2_encoding):
    source = write_text(tmp_path / "input.txt", SAMPLE_TEXT)
    data_dir = tmp_path / "data"
    prepare(["--dataset", "shakespeare", "--input", str(source), "--data_dir", str(data_dir)])

    meta = load_meta(data_dir)
    assert meta["dataset"] == "shakespeare"
    assert meta["tokenizer"] == "gpt2"
    ids = np.concatenate([read_split(data_dir, "train"), read_split(data_dir, "val")])
    assert decoder_from_meta(meta)(ids) == SAMPLE_TEXT


def test_gpt2_documents_eot_only_between(tmp_path, gpt2_encoding):
    documents = [f"Doc {i} says <|endoftext|> literally, then ends." * (1 + i % 3) for i in range(40)]
    source = write_jsonl(tmp_path / "docs.jsonl", [{"text": document} for document in documents])
    data_dir = tmp_path / "data"
    prepare(["--dataset", "custom", "--input", str(source), "--data_dir", str(data_dir)])

    meta = load_meta(data_dir)
    assert meta["tokenizer"] == "gpt2"
    decode = decoder_from_meta(meta)
    in_val = val_draws(meta["seed"], len(documents))
    for split, expected in (
        ("train", [d for d, v in zip(documents, in_val) if not v]),
        ("val", [d for d, v in zip(documents, in_val) if v]),
    ):
        ids = read_split(data_dir, split).tolist()
        assert ids.count(50256) == len(expected)
        assert ids[-1] == 50256
        segments = []
        start = 0
        for position, token in enumerate(ids):
            if token == 50256:
                segments.append(decode(ids[start:position]))
                start = position + 1
        assert segments == expected


def test_bpe_pieces_encode_like_whole(gpt2_encoding):
    rng = random.Random(0)
    alphabet = [
        "a", "b", "Z", " ", "  ", "\n", "\n\n", "\r\n", "\r", "\t", "'", "'s", "1", "23", ".", "!",
        "\x1c", "\u00a0", "\u3000", "\u00e9", "\U0001f600",
    ]
    text = "".join(rng.choice(alphabet) for _ in range(20_000))
    pieces = split_text_for_bpe(text, piece_chars=40)
    assert len(pieces) > 50
    ids = [token for piece in pieces for token in gpt2_encoding.encode_ordinary(piece)]
    assert ids == gpt2_encoding.encode_ordinary(text)


def test_encode_bpe_parallel_keeps_order():
    fake = FakeEncoding()
    texts = [f"text {i} " * (i % 4) for i in range(101)]
    expected = [list(text.encode()) for text in texts]
    assert prepare_data.encode_bpe_parallel(fake, texts, num_threads=1) == expected
    assert fake.threads == {threading.current_thread().name}
    assert prepare_data.encode_bpe_parallel(fake, texts, num_threads=4) == expected
    assert prepare_data.encode_bpe_parallel(fake, texts[:1], num_threads=4) == expected[:1]
    assert prepare_data.encode_bpe_parallel(fake, [], num_threads=4) == []


def test_split_text_for_bpe_cuts():
    text = "word  \n\nnext\nline \n  tail\n" * 50
    pieces = split_text_for_bpe(text, piece_chars=10)
    assert "".join(pieces) == text
    assert len(pieces) > 1
    position = 0
    for piece in pieces[:-1]:
        position += len(piece)
        assert text[position] == "\n"
        assert not text[position - 1].isspace()
    assert split_text_for_bpe("no newline at all " * 100, piece_chars=10) == ["no newline at all " * 100]

    crlf = "windows line\r\n" * 50
    pieces = split_text_for_bpe(crlf, piece_chars=20)
    assert len(pieces) > 1
    assert all(piece.startswith("\r\n") for piece in pieces[1:])
    assert "".join(pieces) == crlf


def test_documents_get_eot_with_fake_encoding(tmp_path, fake_gpt2):
    documents = [f"document number {i}\n" for i in range(12)]
    for i, document in enumerate(documents):
        write_text(tmp_path / "docs" / f"{i:02d}.txt", document)
    data_dir = tmp_path / "data"
    prepare(["--dataset", "custom", "--input", str(tmp_path / "docs"), "--tokenizer", "gpt2", "--data_dir", str(data_dir)])

    ids = np.concatenate([read_split(data_dir, "train"), read_split(data_dir, "val")]).tolist()
    assert ids.count(50256) == len(documents)
    texts = bytes(token for token in ids if token != 50256).decode("utf-8")
    assert sorted(texts.splitlines(keepends=True)) == sorted(documents)


# --------------------------------------------------------------------------------------------------
# JSONL and parquet records


def test_jsonl_text_field(tmp_path):
    documents = [f"record {i}: {'abc' * (i % 5)}\n" for i in range(60)]
    records = [{"id": i, "content": document} for i, document in enumerate(documents)]
    source = write_jsonl(tmp_path / "docs.jsonl", records)
    data_dir = tmp_path / "data"
    result = prepare(
        ["--dataset", "custom", "--input", str(source), "--text_field", "content", "--tokenizer", "char", "--data_dir", str(data_dir)]
    )

    meta = load_meta(data_dir)
    assert meta["dataset"] == "custom"
    assert meta["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    in_val = val_draws(meta["seed"], len(documents))
    assert any(in_val)
    decode = decoder_from_meta(meta)
    assert decode(read_split(data_dir, "train")) == "".join(d for d, v in zip(documents, in_val) if not v)
    assert decode(read_split(data_dir, "val")) == "".join(d for d, v in zip(documents, in_val) if v)
    assert result.val_documents == sum(in_val)
    assert result.train_documents == len(documents) - sum(in_val)


def test_parquet_text_field(tmp_path):
    pyarrow = pytest.importorskip("pyarrow")
    parquet = pytest.importorskip("pyarrow.parquet")
    documents = [f"parquet row {i} \u00e9\n" * (1 + i % 3) for i in range(50)]
    table = pyarrow.table({"body": documents, "score": list(range(len(documents)))})
    source = tmp_path / "docs.parquet"
    parquet.write_table(table, source)
    data_dir = tmp_path / "data"
    prepare(["--dataset", "custom", "--input", str(source), "--text_field", "body", "--tokenizer", "char", "--data_dir", str(data_dir)])

    meta = load_meta(data_dir)
    in_val = val_draws(meta["seed"], len(documents))
    decode = decoder_from_meta(meta)
    assert decode(read_split(data_dir, "train")) == "".join(d for d, v in zip(documents, in_val) if not v)
    assert decode(read_split(data_dir, "val")) == "".join(d for d, v in zip(documents, in_val) if v)


def test_record_folder_hash_and_order(tmp_path):
    first = [{"text": f"first file {i}\n"} for i in range(20)]
    second = [{"text": f"second file {i}\n"} for i in range(20)]
    write_jsonl(tmp_path / "shards" / "a.jsonl", first)
    write_jsonl(tmp_path / "shards" / "sub" / "b.jsonl", second)
    data_dir = tmp_path / "data"
    prepare(["--dataset", "custom", "--input", str(tmp_path / "shards"), "--tokenizer", "char", "--data_dir", str(data_dir)])

    meta = load_meta(data_dir)
    listing = "".join(
        f"{hashlib.sha256((tmp_path / 'shards' / name).read_bytes()).hexdigest()}  {name}\n"
        for name in ("a.jsonl", "sub/b.jsonl")
    )
    assert meta["sha256"] == hashlib.sha256(listing.encode()).hexdigest()
    documents = [record["text"] for record in first + second]
    in_val = val_draws(meta["seed"], len(documents))
    decode = decoder_from_meta(meta)
    assert decode(read_split(data_dir, "train")) == "".join(d for d, v in zip(documents, in_val) if not v)


def test_missing_text_field(tmp_path):
    source = write_jsonl(tmp_path / "docs.jsonl", [{"body": "x"}, {"body": "y"}])
    with pytest.raises(PrepareDataError) as error:
        prepare(["--dataset", "custom", "--input", str(source), "--tokenizer", "char", "--data_dir", str(tmp_path / "data")])
    assert "no field 'text'" in str(error.value)
    assert "'body'" in str(error.value)
    assert "--text_field" in str(error.value)
    assert not (tmp_path / "data").exists()


def test_non_string_text_field(tmp_path):
    source = write_jsonl(tmp_path / "docs.jsonl", [{"text": 1}, {"text": 2}])
    with pytest.raises(PrepareDataError, match="field 'text' is int, expected a string"):
        prepare(["--dataset", "custom", "--input", str(source), "--tokenizer", "char", "--data_dir", str(tmp_path / "data")])


def test_null_text_field(tmp_path):
    source = write_jsonl(tmp_path / "docs.jsonl", [{"text": "a"}, {"other": "b"}, {"text": None}])
    with pytest.raises(PrepareDataError, match=r"record 2 of .* has no value in field 'text' \(null or missing\)"):
        prepare(["--dataset", "custom", "--input", str(source), "--tokenizer", "char", "--data_dir", str(tmp_path / "data")])


def test_lone_surrogate_in_jsonl(tmp_path):
    source = tmp_path / "docs.jsonl"
    source.write_text('{"text": "fine"}\n{"text": "broken \\ud800 here"}\n', encoding="utf-8")
    with pytest.raises(PrepareDataError) as error:
        prepare(["--dataset", "custom", "--input", str(source), "--tokenizer", "char", "--data_dir", str(tmp_path / "data")])
    assert str(source) in str(error.value)
    assert "surrogate" in str(error.value)
    assert not (tmp_path / "data").exists()


def test_lone_surrogate_in_stream(tmp_path, monkeypatch, fake_gpt2):
    datasets = pytest.importorskip("datasets")
    records = [{"text": "fine"}, {"text": "broken \ud800 here"}]
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: FakeStream(records))
    with pytest.raises(PrepareDataError) as error:
        prepare(["--dataset", "fineweb", "--data_dir", str(tmp_path / "data")])
    assert "record 2 of HuggingFaceFW/fineweb (sample-10BT)" in str(error.value)
    assert "U+D800 at character 7" in str(error.value)
    assert not (tmp_path / "data").exists()


def test_malformed_jsonl(tmp_path):
    source = tmp_path / "docs.jsonl"
    source.write_text('{"text": "fine"}\nthis is not json\n', encoding="utf-8")
    with pytest.raises(PrepareDataError) as error:
        prepare(["--dataset", "custom", "--input", str(source), "--tokenizer", "char", "--data_dir", str(tmp_path / "data")])
    assert str(source) in str(error.value)
    assert not (tmp_path / "data").exists()


# --------------------------------------------------------------------------------------------------
# Document splits


def test_document_split_deterministic(tmp_path):
    documents = [{"text": f"doc {i} " + "x" * (i % 7)} for i in range(80)]
    source = write_jsonl(tmp_path / "docs.jsonl", documents)
    common = ["--dataset", "custom", "--input", str(source), "--tokenizer", "char"]
    prepare(common + ["--data_dir", str(tmp_path / "a"), "--seed", "5"])
    prepare(common + ["--data_dir", str(tmp_path / "b"), "--seed", "5"])
    prepare(common + ["--data_dir", str(tmp_path / "c"), "--seed", "6"])

    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")
    assert val_draws(5, 80) != val_draws(6, 80)
    assert snapshot(tmp_path / "a")["val.bin"] != snapshot(tmp_path / "c")["val.bin"]


def test_small_corpus_gets_val_document(tmp_path):
    # A seed whose draws put none of three documents in val.
    seed = next(seed for seed in range(1000) if not any(val_draws(seed, 3)))
    rng = random.Random(seed)
    draws = [rng.random() for _ in range(3)]
    documents = ["alpha alpha\n", "beta beta beta\n", "gamma\n"]
    for i, document in enumerate(documents):
        write_text(tmp_path / "docs" / f"{i}.txt", document)
    data_dir = tmp_path / "data"
    result = prepare(["--dataset", "custom", "--input", str(tmp_path / "docs"), "--seed", str(seed), "--data_dir", str(data_dir)])

    moved = draws.index(min(draws))
    decode = decoder_from_meta(load_meta(data_dir))
    assert decode(read_split(data_dir, "val")) == documents[moved]
    assert decode(read_split(data_dir, "train")) == "".join(d for i, d in enumerate(documents) if i != moved)
    assert (result.train_documents, result.val_documents) == (2, 1)


def test_single_document_corpus_rejected(tmp_path):
    write_text(tmp_path / "docs" / "a.txt", "only this one has text\n")
    write_text(tmp_path / "docs" / "b.txt", "")
    with pytest.raises(PrepareDataError, match="single non-empty document"):
        prepare(["--dataset", "custom", "--input", str(tmp_path / "docs"), "--data_dir", str(tmp_path / "data")])
    assert not (tmp_path / "data").exists()


def test_block_size_too_long_for_val(tmp_path):
    source = write_text(tmp_path / "input.txt", SAMPLE_TEXT)
    n_val = len(SAMPLE_TEXT) - int(len(SAMPLE_TEXT) * 0.9)
    with pytest.raises(PrepareDataError) as error:
        prepare(["--input", str(source), "--data_dir", str(tmp_path / "data"), "--block_size", str(n_val)])
    assert f"the val split has {n_val:,} tokens" in str(error.value)
    assert f"--block_size {n_val} + 1" in str(error.value)
    assert not (tmp_path / "data").exists()

    prepare(["--input", str(source), "--data_dir", str(tmp_path / "data"), "--block_size", str(n_val - 1)])
    assert load_meta(tmp_path / "data")["val_tokens"] == n_val


# --------------------------------------------------------------------------------------------------
# Bad input


def test_invalid_utf8_names_file_and_offset(tmp_path):
    source = tmp_path / "input.txt"
    source.write_bytes(b"hello\nworld \xff\xfe more")
    with pytest.raises(PrepareDataError) as error:
        prepare(["--input", str(source), "--data_dir", str(tmp_path / "data")])
    assert str(source) in str(error.value)
    assert "byte offset 12" in str(error.value)
    assert "0xff" in str(error.value)
    assert not (tmp_path / "data").exists()


def test_invalid_utf8_in_folder_names_file(tmp_path):
    write_text(tmp_path / "docs" / "good.txt", "fine text\n")
    bad = tmp_path / "docs" / "bad.txt"
    bad.write_bytes("caf\u00e9 ".encode("utf-8") + b"\xc3(")
    with pytest.raises(PrepareDataError) as error:
        prepare(["--dataset", "custom", "--input", str(tmp_path / "docs"), "--data_dir", str(tmp_path / "data")])
    assert str(bad) in str(error.value)
    assert "byte offset 6" in str(error.value)


def test_invalid_utf8_jsonl_offset(tmp_path):
    source = tmp_path / "docs.jsonl"
    good = '{"text": "ok"}\n'.encode("utf-8")
    source.write_bytes(good + b'{"text": "bad \x80"}\n')
    with pytest.raises(PrepareDataError) as error:
        prepare(["--dataset", "custom", "--input", str(source), "--tokenizer", "char", "--data_dir", str(tmp_path / "data")])
    assert str(source) in str(error.value)
    assert f"byte offset {len(good) + 14}" in str(error.value)


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 1 << 20])
def test_scan_utf8_offsets_across_chunks(tmp_path, chunk_bytes):
    valid = "\u00e9t\u00e9 \u65e5\u672c \U0001f600\n".encode("utf-8") * 3
    path = tmp_path / "valid.txt"
    path.write_bytes(valid)
    assert scan_utf8_file(path, chunk_bytes=chunk_bytes) == hashlib.sha256(valid).hexdigest()

    path.write_bytes(valid + b"ab\xff")
    with pytest.raises(PrepareDataError, match=f"byte offset {len(valid) + 2}"):
        scan_utf8_file(path, chunk_bytes=chunk_bytes)

    # A multi-byte character cut off by the end of the file.
    path.write_bytes(valid + b"x" + "\u65e5".encode("utf-8")[:2])
    with pytest.raises(PrepareDataError, match=f"byte offset {len(valid) + 1}"):
        scan_utf8_file(path, chunk_bytes=chunk_bytes)


def _empty_file(tmp_path):
    return ["--input", str(write_text(tmp_path / "input.txt", ""))]


def _bom_only_file(tmp_path):
    path = tmp_path / "input.txt"
    path.write_bytes(b"\xef\xbb\xbf")
    return ["--dataset", "custom", "--input", str(path)]


def _empty_folder(tmp_path):
    (tmp_path / "docs").mkdir()
    return ["--dataset", "custom", "--input", str(tmp_path / "docs")]


def _folder_of_empty_files(tmp_path):
    write_text(tmp_path / "docs" / "a.txt", "")
    write_text(tmp_path / "docs" / "b.txt", "")
    return ["--dataset", "custom", "--input", str(tmp_path / "docs")]


def _jsonl_of_empty_texts(tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"text": ""}, {"text": ""}])
    return ["--dataset", "custom", "--input", str(path), "--tokenizer", "char"]


def _jsonl_without_records(tmp_path):
    path = write_text(tmp_path / "docs.jsonl", "")
    return ["--dataset", "custom", "--input", str(path), "--tokenizer", "char"]


@pytest.mark.parametrize(
    "make_args, message",
    [
        (_empty_file, "is empty"),
        (_bom_only_file, "is empty"),
        (_empty_folder, "contains no .txt"),
        (_folder_of_empty_files, "is empty"),
        (_jsonl_of_empty_texts, "is empty"),
        (_jsonl_without_records, "is empty"),
    ],
)
def test_empty_input_rejected(tmp_path, make_args, message):
    data_dir = tmp_path / "out" / "data"
    with pytest.raises(PrepareDataError, match=message):
        prepare(make_args(tmp_path) + ["--data_dir", str(data_dir)])
    assert not (tmp_path / "out").exists()


def test_mixed_folder_rejected(tmp_path):
    write_text(tmp_path / "docs" / "a.txt", "text\n")
    write_jsonl(tmp_path / "docs" / "b.jsonl", [{"text": "record"}])
    with pytest.raises(PrepareDataError, match="mixes 1 .txt files with 1 JSONL/parquet files"):
        prepare(["--dataset", "custom", "--input", str(tmp_path / "docs"), "--data_dir", str(tmp_path / "data")])


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--val_fraction", "0"], "--val_fraction must be between 0 and 1"),
        (["--val_fraction", "1.5"], "--val_fraction must be between 0 and 1"),
        (["--val_fraction", "nan"], "--val_fraction must be between 0 and 1"),
        (["--max_tokens", "1"], "--max_tokens must be at least 2"),
        (["--block_size", "0"], "--block_size must be a positive"),
        (["--num_threads", "0"], "--num_threads must be at least 1"),
        (["--tokenizer", "gpt2"], "--dataset shakespeare_char uses --tokenizer char"),
        (["--dataset", "shakespeare", "--tokenizer", "char"], "use --dataset shakespeare_char"),
        (["--dataset", "fineweb", "--tokenizer", "char"], "--dataset fineweb uses --tokenizer gpt2"),
        (["--text_field", "body"], "--text_field applies to JSONL or parquet input"),
    ],
)
def test_invalid_flags_rejected(tmp_path, flags, message):
    source = write_text(tmp_path / "input.txt", SAMPLE_TEXT)
    with pytest.raises(PrepareDataError, match=message):
        prepare(["--input", str(source), "--data_dir", str(tmp_path / "data")] + flags)
    assert not (tmp_path / "data").exists()


def test_invalid_inputs_rejected(tmp_path):
    data_dir = str(tmp_path / "data")
    with pytest.raises(PrepareDataError, match="--dataset custom needs --input"):
        prepare(["--dataset", "custom", "--data_dir", data_dir])
    with pytest.raises(PrepareDataError, match="does not exist"):
        prepare(["--input", str(tmp_path / "missing.txt"), "--data_dir", data_dir])
    (tmp_path / "folder").mkdir()
    write_text(tmp_path / "folder" / "a.txt", "x\n")
    with pytest.raises(PrepareDataError, match="is a folder"):
        prepare(["--input", str(tmp_path / "folder"), "--data_dir", data_dir])
    jsonl = write_jsonl(tmp_path / "a.jsonl", [{"text": "x"}])
    with pytest.raises(PrepareDataError, match="use --dataset custom --text_field"):
        prepare(["--input", str(jsonl), "--data_dir", data_dir])
    with pytest.raises(PrepareDataError, match="plain text; use --dataset custom"):
        prepare(["--dataset", "fineweb", "--input", str(tmp_path / "folder" / "a.txt"), "--data_dir", data_dir])
    a_file = write_text(tmp_path / "not_a_dir", "x")
    with pytest.raises(PrepareDataError, match="is not a folder"):
        prepare(["--input", str(tmp_path / "folder" / "a.txt"), "--data_dir", str(a_file)])


# --------------------------------------------------------------------------------------------------
# No partial output


def test_failure_leaves_no_new_folders(tmp_path):
    source = tmp_path / "input.txt"
    source.write_bytes(b"valid start \xff")
    data_dir = tmp_path / "a" / "b" / "data"
    with pytest.raises(PrepareDataError):
        prepare(["--input", str(source), "--data_dir", str(data_dir)])
    assert not (tmp_path / "a").exists()
    assert leftover_temp_dirs(tmp_path) == []


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failure_keeps_existing_output(tmp_path, monkeypatch, error):
    source = write_text(tmp_path / "input.txt", SAMPLE_TEXT)
    data_dir = tmp_path / "data"
    prepare(["--input", str(source), "--data_dir", str(data_dir)])
    before = snapshot(data_dir)

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(prepare_data, "_check_split_sizes", fail)
    with pytest.raises(type(error)):
        prepare(["--input", str(source), "--data_dir", str(data_dir), "--val_fraction", "0.5"])
    assert snapshot(data_dir) == before
    assert leftover_temp_dirs(tmp_path) == []


def test_write_error_is_reported(tmp_path, monkeypatch):
    source = write_text(tmp_path / "input.txt", SAMPLE_TEXT)

    def disk_full(out_dir, data_dir):
        raise OSError(28, "No space left on device", str(data_dir / "train.bin"))

    monkeypatch.setattr(prepare_data, "_move_into_place", disk_full)
    with pytest.raises(PrepareDataError, match="No space left on device"):
        prepare(["--input", str(source), "--data_dir", str(tmp_path / "data")])
    assert not (tmp_path / "data").exists()
    assert leftover_temp_dirs(tmp_path) == []


def test_failure_mid_stream_keeps_existing_output(tmp_path):
    records = [{"text": f"good record {i}\n"} for i in range(30)] + [{"text": 7}]
    source = write_jsonl(tmp_path / "docs.jsonl", records)
    data_dir = tmp_path / "data"
    prepare(["--input", str(write_text(tmp_path / "input.txt", SAMPLE_TEXT)), "--data_dir", str(data_dir)])
    before = snapshot(data_dir)
    with pytest.raises(PrepareDataError, match="record 31"):
        prepare(["--dataset", "custom", "--input", str(source), "--tokenizer", "char", "--data_dir", str(data_dir)])
    assert snapshot(data_dir) == before
    assert leftover_temp_dirs(tmp_path) == []


def test_rerun_replaces_output_and_keeps_other_files(tmp_path):
    data_dir = tmp_path / "data"
    first = write_text(tmp_path / "first.txt", SAMPLE_TEXT)
    prepare(["--dataset", "custom", "--input", str(first), "--data_dir", str(data_dir)])
    write_text(data_dir / "notes.md", "kept")
    second = write_text(tmp_path / "second.txt", "a different and much shorter text\n" * 5)
    prepare(["--dataset", "custom", "--input", str(second), "--data_dir", str(data_dir)])

    assert (data_dir / "notes.md").read_text() == "kept"
    meta = load_meta(data_dir)
    assert meta["source"] == str(second)
    ids = np.concatenate([read_split(data_dir, "train"), read_split(data_dir, "val")])
    assert decoder_from_meta(meta)(ids) == "a different and much shorter text\n" * 5
    assert sorted(path.name for path in data_dir.iterdir()) == ["meta.json", "notes.md", "train.bin", "val.bin"]


# --------------------------------------------------------------------------------------------------
# Download of Tiny Shakespeare


class FakeResponse:
    def __init__(self, data: bytes):
        self.data = data

    def read(self):
        return self.data

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_failure_message(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    data_dir = tmp_path / "data" / "shakespeare_char"
    with pytest.raises(PrepareDataError) as error:
        prepare(["--data_dir", str(data_dir)])
    message = str(error.value)
    assert "could not download" in message
    assert prepare_data.TINY_SHAKESPEARE_URL in message
    assert f"put input.txt at {data_dir / 'input.txt'}" in message
    assert "--input PATH" in message
    assert "\n" not in message
    assert not (tmp_path / "data").exists()


def test_download_saves_input_and_reuses_it(tmp_path, monkeypatch):
    payload = SAMPLE_TEXT.encode("utf-8")
    calls = []

    def fake_urlopen(url, timeout=None):
        calls.append((url, timeout))
        return FakeResponse(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    monkeypatch.setattr(prepare_data, "TINY_SHAKESPEARE_SHA256", hashlib.sha256(payload).hexdigest())
    data_dir = tmp_path / "data"
    prepare(["--data_dir", str(data_dir)])

    assert calls == [(prepare_data.TINY_SHAKESPEARE_URL, prepare_data.DOWNLOAD_TIMEOUT_S)]
    assert 0 < prepare_data.DOWNLOAD_TIMEOUT_S <= 120
    assert (data_dir / "input.txt").read_bytes() == payload
    meta = load_meta(data_dir)
    assert meta["source"] == prepare_data.TINY_SHAKESPEARE_URL
    assert meta["sha256"] == hashlib.sha256(payload).hexdigest()

    # The second run reads <data_dir>/input.txt and does not download.
    monkeypatch.setattr(urllib.request, "urlopen", lambda *args, **kwargs: pytest.fail("downloaded again"))
    prepare(["--data_dir", str(data_dir)])
    assert load_meta(data_dir)["source"] == str(data_dir / "input.txt")


def test_download_hash_mismatch(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: FakeResponse(b"not shakespeare\n" * 10))
    with pytest.raises(PrepareDataError) as error:
        prepare(["--data_dir", str(tmp_path / "data")])
    assert "SHA-256" in str(error.value)
    assert prepare_data.TINY_SHAKESPEARE_SHA256 in str(error.value)
    assert not (tmp_path / "data").exists()


# --------------------------------------------------------------------------------------------------
# GPT-2 vocabulary that cannot be loaded


@pytest.fixture
def uncached_tiktoken(tmp_path, monkeypatch):
    """An empty TIKTOKEN_CACHE_DIR and no encoding loaded in this process, so tiktoken must download."""
    tiktoken_registry = pytest.importorskip("tiktoken.registry")
    requests = pytest.importorskip("requests")
    empty = tmp_path / "empty_cache"
    empty.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(empty))
    monkeypatch.setattr(tiktoken_registry, "ENCODINGS", {})
    monkeypatch.setattr(prepare_data, "_GPT2_ENCODINGS", {})
    return requests


def test_gpt2_vocab_download_failure(tmp_path, monkeypatch, capsys, uncached_tiktoken):
    requests = uncached_tiktoken

    def offline(*args, **kwargs):
        raise requests.ConnectionError("Failed to resolve 'openaipublic.blob.core.windows.net'")

    monkeypatch.setattr(requests, "get", offline)
    source = write_text(tmp_path / "input.txt", SAMPLE_TEXT)
    code = prepare_data.main(["--dataset", "custom", "--input", str(source), "--tokenizer", "gpt2", "--data_dir", str(tmp_path / "data")])

    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1
    assert "Traceback" not in err
    assert "GPT-2 BPE vocabulary" in err
    assert "TIKTOKEN_CACHE_DIR" in err
    assert "--tokenizer char" in err
    assert not (tmp_path / "data").exists()


def test_gpt2_vocab_download_timeout(tmp_path, monkeypatch, uncached_tiktoken):
    requests = uncached_tiktoken

    def stalled(*args, **kwargs):
        time.sleep(1.5)
        raise requests.ConnectionError("stalled")

    monkeypatch.setattr(requests, "get", stalled)
    monkeypatch.setattr(prepare_data, "TOKENIZER_LOAD_TIMEOUT_S", 0.2)
    source = write_text(tmp_path / "input.txt", SAMPLE_TEXT)
    start = time.perf_counter()
    with pytest.raises(PrepareDataError, match="timed out after 0.2 s") as error:
        prepare(["--dataset", "shakespeare", "--input", str(source), "--data_dir", str(tmp_path / "data")])
    assert time.perf_counter() - start < 1.4
    assert "--tokenizer char" in str(error.value)
    # Let the stalled thread finish before other tests use tiktoken's registry lock.
    time.sleep(1.5)


# --------------------------------------------------------------------------------------------------
# FineWeb streaming and the optional `datasets` package


def test_datasets_missing_message(tmp_path, monkeypatch, fake_gpt2):
    monkeypatch.setitem(sys.modules, "datasets", None)
    source = write_jsonl(tmp_path / "docs.jsonl", [{"text": "a"}, {"text": "b"}])
    with pytest.raises(PrepareDataError, match=r"pip install datasets"):
        prepare(["--dataset", "custom", "--input", str(source), "--data_dir", str(tmp_path / "data")])
    with pytest.raises(PrepareDataError, match=r"--dataset fineweb needs the Hugging Face `datasets` package"):
        prepare(["--dataset", "fineweb", "--data_dir", str(tmp_path / "data")])
    assert not (tmp_path / "data").exists()


def test_import_does_not_load_datasets():
    code = "import sys, prepare_data; print('datasets' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert output.stdout.strip() == "False"


def test_fineweb_stream_stops_at_max_tokens(tmp_path, monkeypatch, fake_gpt2):
    datasets = pytest.importorskip("datasets")
    calls = []
    consumed = []

    def endless_records():
        index = 0
        while True:
            consumed.append(index)
            yield {"text": f"web page {index} with <|endoftext|> inside", "url": f"https://example.com/{index}"}
            index += 1

    stream = FakeStream(endless_records(), column_names=["text", "url"])

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return stream

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(prepare_data, "BATCH_CHARS", 200)
    monkeypatch.setattr(prepare_data, "RECORD_BATCH_SIZE", 10)
    data_dir = tmp_path / "data"
    result = prepare(["--dataset", "fineweb-edu", "--max_tokens", "5000", "--num_threads", "3", "--data_dir", str(data_dir)])

    assert calls == [(("HuggingFaceFW/fineweb-edu",), {"name": "sample-10BT", "split": "train", "streaming": True})]
    meta = load_meta(data_dir)
    assert meta["dataset"] == "fineweb-edu"
    assert meta["tokenizer"] == "gpt2"
    assert meta["sha256"] is None
    assert "HuggingFaceFW/fineweb-edu" in meta["source"]
    assert meta["train_tokens"] + meta["val_tokens"] == 5000
    assert len(consumed) < 200
    assert stream.selected == ["text"]
    assert 1 <= len(fake_gpt2.threads) <= 3
    assert all(name.startswith("bpe") for name in fake_gpt2.threads)
    ids = np.concatenate([read_split(data_dir, "train"), read_split(data_dir, "val")]).tolist()
    assert ids.count(50256) >= result.train_documents + result.val_documents - 1


def test_stream_without_text_field(tmp_path, monkeypatch, fake_gpt2):
    datasets = pytest.importorskip("datasets")
    stream = FakeStream([{"content": "x"}], column_names=["content", "url"])
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: stream)
    with pytest.raises(PrepareDataError) as error:
        prepare(["--dataset", "fineweb", "--data_dir", str(tmp_path / "data")])
    assert "HuggingFaceFW/fineweb (sample-10BT) has no field 'text'" in str(error.value)
    assert "'content', 'url'" in str(error.value)
    assert "--text_field" in str(error.value)


def test_fineweb_default_max_tokens():
    args = prepare_data.build_parser().parse_args(["--dataset", "fineweb"])
    prepare_data._check_args(args)
    assert args.max_tokens == prepare_data.DEFAULT_FINEWEB_MAX_TOKENS
    assert args.data_dir == os.path.join("data", "fineweb")
    assert f"{prepare_data.DEFAULT_FINEWEB_MAX_TOKENS:,}" in prepare_data.build_parser().format_help()


def test_default_threads_use_available_cores():
    args = prepare_data.build_parser().parse_args([])
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert args.num_threads == expected


def test_fineweb_stream_failure_message(tmp_path, monkeypatch, fake_gpt2):
    datasets = pytest.importorskip("datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'HuggingFaceFW/fineweb' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(PrepareDataError) as error:
        prepare(["--dataset", "fineweb", "--data_dir", str(tmp_path / "data")])
    message = str(error.value)
    assert "failed to open HuggingFaceFW/fineweb (sample-10BT)" in message
    assert "--input" in message
    assert not (tmp_path / "data").exists()


def test_fineweb_local_parquet_copy(tmp_path, fake_gpt2):
    pyarrow = pytest.importorskip("pyarrow")
    parquet = pytest.importorskip("pyarrow.parquet")
    documents = [f"local shard row {i}" for i in range(30)]
    (tmp_path / "shards").mkdir()
    parquet.write_table(pyarrow.table({"text": documents}), tmp_path / "shards" / "000_00000.parquet")
    data_dir = tmp_path / "data"
    prepare(["--dataset", "fineweb", "--input", str(tmp_path / "shards"), "--data_dir", str(data_dir)])

    meta = load_meta(data_dir)
    assert meta["dataset"] == "fineweb"
    assert meta["source"] == str(tmp_path / "shards")
    in_val = val_draws(meta["seed"], len(documents))
    val_ids = read_split(data_dir, "val").tolist()
    expected = [list(d.encode()) + [50256] for d, v in zip(documents, in_val) if v]
    assert val_ids == [token for ids in expected for token in ids]


def test_progress_on_stderr(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(prepare_data, "PROGRESS_INTERVAL_S", 0.0)
    monkeypatch.setattr(prepare_data, "BATCH_CHARS", 50)
    for i in range(10):
        write_text(tmp_path / "docs" / f"{i}.txt", f"document {i} text\n" * 5)
    prepare(["--dataset", "custom", "--input", str(tmp_path / "docs"), "--data_dir", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert "tokenizing" in err
    assert "10 documents" in err
    assert "tokens/s" in err


# --------------------------------------------------------------------------------------------------
# Interface for train.py


def test_load_meta_missing_names_command(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_meta(tmp_path / "data" / "shakespeare_char")
    assert f"python prepare_data.py --dataset shakespeare_char --data_dir {tmp_path / 'data' / 'shakespeare_char'}" in str(error.value)
    with pytest.raises(FileNotFoundError, match="python prepare_data.py --dataset DATASET --data_dir"):
        load_meta(tmp_path / "mine")


def test_load_meta_missing_default_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"run `python prepare_data.py --dataset shakespeare` first"):
        load_meta("data/shakespeare")


def test_load_meta_rejects_bad_files(tmp_path):
    (tmp_path / "meta.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_meta(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"tokenizer": "char"}), encoding="utf-8")
    with pytest.raises(ValueError, match="no 'vocab_size' field"):
        load_meta(tmp_path)
    meta = {"tokenizer": "char", "vocab": ["a"], "vocab_size": 2, "dtype": "uint16", "train_tokens": 1, "val_tokens": 1}
    (tmp_path / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ValueError, match="vocab"):
        load_meta(tmp_path)


def test_char_codec_errors():
    meta = {"tokenizer": "char", "vocab": ["\n", "a", "b"], "vocab_size": 3}
    encode, decode = encoder_from_meta(meta), decoder_from_meta(meta)
    assert decode(encode("ab\nba")) == "ab\nba"
    with pytest.raises(ValueError, match=r"'z' \(U\+007A\) at position 2"):
        encode("abz")
    with pytest.raises(ValueError, match="token id 3 is outside"):
        decode([0, 3])


# --------------------------------------------------------------------------------------------------
# Command line end to end


def run_script(args, cwd):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return subprocess.run(
        [sys.executable, str(REPO / "prepare_data.py"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_script_end_to_end(tmp_path):
    source = write_text(tmp_path / "input.txt", SAMPLE_TEXT)
    completed = run_script(["--input", str(source)], cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    summary = completed.stdout.strip()
    assert summary.startswith("prepared shakespeare_char: tokenizer char")
    assert f"vocab_size {len(set(SAMPLE_TEXT))}" in summary
    assert "dtype uint16" in summary
    meta = load_meta(tmp_path / "data" / "shakespeare_char")
    assert f"train {meta['train_tokens']:,} tokens" in summary


def test_script_error_is_one_line(tmp_path):
    source = tmp_path / "input.txt"
    source.write_bytes(b"abc\x80")
    completed = run_script(["--input", str(source), "--data_dir", str(tmp_path / "data")], cwd=tmp_path)
    assert completed.returncode == 1
    assert completed.stdout == ""
    assert completed.stderr.count("\n") == 1
    assert completed.stderr.startswith("prepare_data.py: error:")
    assert "byte offset 3" in completed.stderr
    assert not (tmp_path / "data").exists()
