"""
Prepare a tokenized dataset for train.py: train.bin, val.bin and meta.json in --data_dir.

Run (each command writes into data/<dataset> unless --data_dir is given):

    python prepare_data.py                                # Tiny Shakespeare, characters (downloads 1.1 MB)
    python prepare_data.py --input path/to/input.txt      # the same from a local copy, no network
    python prepare_data.py --dataset shakespeare          # Tiny Shakespeare, GPT-2 BPE
    python prepare_data.py --dataset fineweb-edu          # first 100M GPT-2 tokens, needs `pip install datasets`
    python prepare_data.py --dataset custom --input corpus.jsonl --text_field text
    python prepare_data.py --dataset custom --input books/ --tokenizer char

train.bin and val.bin hold the token ids back to back as little-endian uint16, or uint32 when the
vocabulary has more than 65,536 entries. meta.json records the tokenizer, the vocabulary, the dtype,
the token counts, the source and its SHA-256. train.py reads it through load_meta(),
decoder_from_meta() and encoder_from_meta().

Splits:
- A single text (Tiny Shakespeare, one text file) is split contiguously: the first 90% of its tokens
  are train and the rest is val, as in nanoGPT.
- A document corpus (FineWeb, JSONL or parquet records, a folder of .txt files) assigns whole
  documents. Record k in input order goes to val when the k-th value of random.Random(--seed).random()
  is below --val_fraction. With the GPT-2 tokenizer every document is followed by the end-of-text
  token (id 50256).

All output is written into a temporary folder next to --data_dir and moved into place at the end, so
a failed or interrupted run leaves --data_dir as it was.
"""

from __future__ import annotations

import argparse
import codecs
import dataclasses
import functools
import hashlib
import json
import os
import random
import re
import secrets
import shutil
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
DOWNLOAD_TIMEOUT_S = 30.0

DATASETS = ("shakespeare_char", "shakespeare", "fineweb", "fineweb-edu", "custom")
FIXED_TOKENIZERS = {"shakespeare_char": "char", "shakespeare": "gpt2", "fineweb": "gpt2", "fineweb-edu": "gpt2"}
FINEWEB_REPOS = {"fineweb": "HuggingFaceFW/fineweb", "fineweb-edu": "HuggingFaceFW/fineweb-edu"}
FINEWEB_CONFIG = "sample-10BT"
# 100M tokens are 200 MB of uint16 on disk. With train.py's gpu preset (64 x 256 = 16,384 tokens a
# step) that is about 6,000 steps before a token repeats.
DEFAULT_FINEWEB_MAX_TOKENS = 100_000_000

# "r50k_base" has the same 50,257 tokens and ids as tiktoken's "gpt2" encoding.
TIKTOKEN_ENCODING = "r50k_base"
GPT2_EOT_TOKEN = 50256
# tiktoken downloads the vocabulary with requests and no timeout, so the load runs in a thread that is
# abandoned after this many seconds.
TOKENIZER_LOAD_TIMEOUT_S = 60.0

DEFAULT_VAL_FRACTION = 0.1
DEFAULT_SEED = 1337
UINT16_VOCAB_LIMIT = 1 << 16

TEXT_SUFFIXES = (".txt",)
RECORD_SUFFIXES = (".jsonl", ".json", ".parquet")

# Progress lines go to stderr at most this often, and only once tokenizing has run this long.
PROGRESS_INTERVAL_S = 5.0
# A single text is cut into pieces of about this many characters so that tiktoken can encode them
# on several threads. Documents are encoded in batches of about this many characters.
TEXT_PIECE_CHARS = 1 << 18
BATCH_CHARS = 1 << 22
RECORD_BATCH_SIZE = 1000
COPY_CHUNK_TOKENS = 1 << 22

_SURROGATE = re.compile("[\ud800-\udfff]")
_UNICODE_SIZE = 0x110000


class PrepareDataError(RuntimeError):
    """Input, flag or environment problem that stops data preparation. The message names the fix."""


# --------------------------------------------------------------------------------------------------
# Interface for train.py


def load_meta(data_dir: str | os.PathLike) -> dict:
    """Read and check ``<data_dir>/meta.json``.

    Args:
        data_dir: folder written by prepare_data.py.

    Returns:
        The meta dictionary.

    Raises:
        FileNotFoundError: meta.json is missing; the message names the prepare_data.py command to run.
        ValueError: meta.json is not valid JSON or lacks a field that train.py needs.
    """
    path = Path(data_dir) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `{_prepare_command_for(Path(data_dir))}` first")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}): rerun prepare_data.py for this folder") from exc
    if not isinstance(meta, dict):
        raise ValueError(f"{path} must contain a JSON object, found {type(meta).__name__}")

    for key in ("tokenizer", "vocab_size", "dtype", "train_tokens", "val_tokens"):
        if key not in meta:
            raise ValueError(f"{path} has no {key!r} field: rerun prepare_data.py for this folder")
    if meta["tokenizer"] not in ("char", "gpt2"):
        raise ValueError(f"{path}: invalid tokenizer {meta['tokenizer']!r}, expected 'char' or 'gpt2'; rerun prepare_data.py")
    if meta["dtype"] not in ("uint16", "uint32"):
        raise ValueError(f"{path}: invalid dtype {meta['dtype']!r}, expected 'uint16' or 'uint32'; rerun prepare_data.py")
    if meta["tokenizer"] == "char":
        vocab = meta.get("vocab")
        if not isinstance(vocab, list) or len(vocab) != meta["vocab_size"]:
            raise ValueError(f"{path}: a char tokenizer needs a 'vocab' list of vocab_size {meta['vocab_size']} entries")
    return meta


def decoder_from_meta(meta: dict) -> Callable[[Iterable[int]], str]:
    """Build the function that turns token ids back into text for the tokenizer in ``meta``.

    Args:
        meta: dictionary from meta.json (see load_meta).

    Returns:
        A function from token ids to text. It raises ValueError for an id outside the vocabulary.
        For gpt2, id 50256 decodes to the literal text "<|endoftext|>".
    """
    if meta["tokenizer"] == "char":
        vocab = list(meta["vocab"])

        def decode_chars(ids: Iterable[int]) -> str:
            pieces = []
            for token in ids:
                token = int(token)
                if not 0 <= token < len(vocab):
                    raise ValueError(f"token id {token} is outside the character vocabulary of {len(vocab)} entries")
                pieces.append(vocab[token])
            return "".join(pieces)

        return decode_chars

    encoding = load_gpt2_encoding(meta.get("tiktoken_encoding") or TIKTOKEN_ENCODING)

    def decode_gpt2(ids: Iterable[int]) -> str:
        id_list = [int(token) for token in ids]
        for token in id_list:
            if not 0 <= token < encoding.n_vocab:
                raise ValueError(f"token id {token} is outside the GPT-2 vocabulary of {encoding.n_vocab} entries")
        return encoding.decode(id_list)

    return decode_gpt2


def encoder_from_meta(meta: dict) -> Callable[[str], list[int]]:
    """Build the function that turns text into token ids for the tokenizer in ``meta``.

    Args:
        meta: dictionary from meta.json (see load_meta).

    Returns:
        A function from text to token ids. The char encoder raises ValueError for a character that is
        not in the vocabulary. The gpt2 encoder treats "<|endoftext|>" in the text as ordinary text.
    """
    if meta["tokenizer"] == "char":
        index = {char: i for i, char in enumerate(meta["vocab"])}

        def encode_chars(text: str) -> list[int]:
            ids = []
            for position, char in enumerate(text):
                token = index.get(char)
                if token is None:
                    raise ValueError(
                        f"character {char!r} (U+{ord(char):04X}) at position {position} is not in the "
                        f"vocabulary of {len(index)} characters"
                    )
                ids.append(token)
            return ids

        return encode_chars

    encoding = load_gpt2_encoding(meta.get("tiktoken_encoding") or TIKTOKEN_ENCODING)
    return encoding.encode_ordinary


def dtype_for_vocab(vocab_size: int) -> str:
    """Return "uint16" when every id below ``vocab_size`` fits in 16 bits, else "uint32"."""
    return "uint16" if vocab_size <= UINT16_VOCAB_LIMIT else "uint32"


# --------------------------------------------------------------------------------------------------
# GPT-2 BPE through tiktoken

_GPT2_ENCODINGS: dict[str, Any] = {}


def load_gpt2_encoding(name: str = TIKTOKEN_ENCODING, timeout_s: float | None = None) -> Any:
    """Load a tiktoken encoding, with a one-line error when its vocabulary cannot be fetched.

    tiktoken reads the vocabulary from TIKTOKEN_CACHE_DIR (or its default cache) and otherwise downloads
    it. The load runs in a daemon thread so that a stalled download cannot hang the caller.

    Args:
        name: tiktoken encoding name.
        timeout_s: seconds to wait for the load; TOKENIZER_LOAD_TIMEOUT_S when None.

    Returns:
        The tiktoken.Encoding.

    Raises:
        PrepareDataError: the vocabulary could not be loaded in time. The message names
            TIKTOKEN_CACHE_DIR and --tokenizer char.
    """
    if name in _GPT2_ENCODINGS:
        return _GPT2_ENCODINGS[name]
    import tiktoken

    timeout_s = TOKENIZER_LOAD_TIMEOUT_S if timeout_s is None else timeout_s
    outcome: dict[str, Any] = {}

    def load() -> None:
        try:
            outcome["encoding"] = tiktoken.get_encoding(name)
        except Exception as exc:  # noqa: BLE001 - any failure becomes the one-line message below
            outcome["error"] = exc

    loader = threading.Thread(target=load, name=f"tiktoken-{name}", daemon=True)
    loader.start()
    loader.join(timeout_s)

    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR")
    cache_note = f"TIKTOKEN_CACHE_DIR={cache_dir} has no usable copy" if cache_dir else "TIKTOKEN_CACHE_DIR is not set"
    fix = f"Set TIKTOKEN_CACHE_DIR to a folder that contains tiktoken's cached {name} file, or use --tokenizer char."
    if loader.is_alive():
        raise PrepareDataError(
            f"timed out after {timeout_s:g} s loading the GPT-2 BPE vocabulary (tiktoken {name}), "
            f"and {cache_note}. {fix}"
        )
    if "error" in outcome:
        raise PrepareDataError(
            f"could not load the GPT-2 BPE vocabulary (tiktoken {name}) because the download failed "
            f"({_one_line(outcome['error'])}), and {cache_note}. {fix}"
        )
    _GPT2_ENCODINGS[name] = outcome["encoding"]
    return outcome["encoding"]


def split_text_for_bpe(text: str, piece_chars: int = TEXT_PIECE_CHARS) -> list[str]:
    """Cut ``text`` into pieces of about ``piece_chars`` that GPT-2 BPE encodes exactly as the whole.

    A cut goes just before a line break ("\n" or "\r\n") whose preceding character is not whitespace.
    The GPT-2 pre-tokenizer regex never joins a non-whitespace character with the whitespace after it,
    and its whitespace rules look only forward, so encoding the pieces one by one and concatenating the
    ids gives the ids of the whole text. A text without such a line break stays in one piece.

    Args:
        text: the text to cut.
        piece_chars: target piece length in characters.

    Returns:
        Pieces whose concatenation is ``text``.
    """
    pieces = []
    start = 0
    while len(text) - start > piece_chars:
        newline = text.find("\n", start + piece_chars)
        cut = -1
        while newline != -1:
            candidate = newline - 1 if text[newline - 1] == "\r" else newline
            # str.isspace() is true for all 25 Unicode White_Space characters that the regex's \s matches,
            # and also for U+001C..U+001F, so a character it rejects is never regex whitespace.
            if candidate > start and not text[candidate - 1].isspace():
                cut = candidate
                break
            newline = text.find("\n", newline + 1)
        if cut == -1:
            break
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


# --------------------------------------------------------------------------------------------------
# Reading input


def read_text_file(path: str | os.PathLike) -> tuple[str, str]:
    """Read a text file as UTF-8 on every platform.

    Line endings are kept as they are in the file. A leading UTF-8 byte order mark is dropped, because
    it marks the encoding and is not part of the text.

    Args:
        path: the file to read.

    Returns:
        The text and the SHA-256 hex digest of the file's bytes.

    Raises:
        PrepareDataError: the file is missing or is not valid UTF-8; the message gives the byte offset.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PrepareDataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PrepareDataError(_invalid_utf8_message(path, exc.start, data[exc.start])) from None
    return text.removeprefix("\ufeff"), hashlib.sha256(data).hexdigest()


def scan_utf8_file(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Check that a file is valid UTF-8 without loading it whole, and hash it.

    Args:
        path: the file to check.
        chunk_bytes: read size in bytes.

    Returns:
        The SHA-256 hex digest of the file's bytes.

    Raises:
        PrepareDataError: the file cannot be read or is not valid UTF-8; the message gives the byte offset.
    """
    path = Path(path)
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0  # bytes of the file read before the current chunk
    try:
        with open(path, "rb") as file:
            while chunk := file.read(chunk_bytes):
                digest.update(chunk)
                pending = len(decoder.getstate()[0])
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    # exc.start counts from the bytes the decoder held back from the previous chunk.
                    bad = offset - pending + exc.start
                    raise PrepareDataError(_invalid_utf8_message(path, bad, exc.object[exc.start])) from None
                offset += len(chunk)
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError as exc:
                bad = offset - len(exc.object) + exc.start
                raise PrepareDataError(_invalid_utf8_message(path, bad, exc.object[exc.start])) from None
    except OSError as exc:
        raise PrepareDataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return digest.hexdigest()


def _invalid_utf8_message(path: Path, offset: int, byte: int) -> str:
    return (
        f"{path} is not valid UTF-8: invalid byte 0x{byte:02x} at byte offset {offset}; "
        f"convert the file to UTF-8 (for example with iconv) and rerun"
    )


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _combined_sha256(files: list[Path], root: Path, file_hashes: list[str]) -> str:
    """Hash a set of files as the SHA-256 of `sha256sum`-style lines sorted by relative path."""
    entries = sorted((path.relative_to(root).as_posix(), sha) for path, sha in zip(files, file_hashes))
    listing = "".join(f"{sha}  {name}\n" for name, sha in entries)
    return hashlib.sha256(listing.encode("utf-8")).hexdigest()


def _list_input_files(path: Path) -> tuple[str, list[Path]]:
    """Return ("text" or "records", files) for --input, a file or a folder searched recursively."""
    if path.is_file():
        kind = "records" if path.suffix.lower() in RECORD_SUFFIXES else "text"
        return kind, [path]
    if not path.is_dir():
        raise PrepareDataError(f"--input {path} does not exist")

    text_files, record_files = [], []
    for file in sorted(path.rglob("*")):
        relative = file.relative_to(path)
        if not file.is_file() or any(part.startswith(".") for part in relative.parts):
            continue
        suffix = file.suffix.lower()
        if suffix in TEXT_SUFFIXES:
            text_files.append(file)
        elif suffix in RECORD_SUFFIXES:
            record_files.append(file)
    if text_files and record_files:
        raise PrepareDataError(
            f"--input {path} mixes {len(text_files)} .txt files with {len(record_files)} JSONL/parquet files; "
            f"put them in separate folders"
        )
    if not text_files and not record_files:
        raise PrepareDataError(f"--input {path} contains no .txt, .jsonl, .json or .parquet files")
    return ("text", text_files) if text_files else ("records", record_files)


def _import_datasets(purpose: str) -> Any:
    # `datasets` is optional and slow to import, so only the paths that read records import it.
    try:
        import datasets
    except ImportError as exc:
        raise PrepareDataError(
            f"{purpose} needs the Hugging Face `datasets` package, which is not installed: "
            f"run `pip install datasets pyarrow`"
        ) from exc
    return datasets


def _iter_text_files(files: list[Path]) -> Iterator[str]:
    for path in files:
        text, _ = read_text_file(path)
        yield text


def _iter_record_files(files: list[Path], text_field: str) -> Iterator[str]:
    datasets = _import_datasets("reading JSONL or parquet input")
    for path in files:
        if path.stat().st_size == 0:
            # `datasets` (5.2) raises a bare StopIteration for an empty file, which has no records anyway.
            continue
        builder = "parquet" if path.suffix.lower() == ".parquet" else "json"
        open_stream = functools.partial(
            datasets.load_dataset, builder, data_files=[str(path)], split="train", streaming=True
        )
        yield from _iter_stream(open_stream, text_field, str(path), fix="check that the file is valid JSON Lines or parquet")


def _iter_hub_stream(dataset: str, text_field: str) -> Iterator[str]:
    datasets = _import_datasets(f"--dataset {dataset}")
    repo = FINEWEB_REPOS[dataset]
    yield from _iter_stream(
        functools.partial(datasets.load_dataset, repo, name=FINEWEB_CONFIG, split="train", streaming=True),
        text_field,
        f"{repo} ({FINEWEB_CONFIG})",
        fix="check the network connection, or download its parquet files and pass them with --input",
    )


def _iter_stream(open_stream: Callable[[], Any], text_field: str, where: str, fix: str) -> Iterator[str]:
    """Yield the text field of each record of a `datasets` IterableDataset, naming the source on any error.

    Records are read in batches of RECORD_BATCH_SIZE through IterableDataset.iter(), because converting
    Arrow columns batch by batch is faster than record by record (0.1 s against 1.0 s for 36,000 JSONL
    records with datasets 5.2).
    """
    try:
        stream = open_stream()
        columns = stream.column_names
        if columns is not None:
            if text_field not in columns:
                fields = ", ".join(repr(name) for name in columns) or "none"
                raise PrepareDataError(f"{where} has no field {text_field!r} (fields: {fields}); pass the right --text_field")
            # Skip converting the other columns (FineWeb has URLs, dates and scores) to Python.
            stream = stream.select_columns([text_field])
        batches = iter(stream.iter(batch_size=RECORD_BATCH_SIZE))
    except PrepareDataError:
        raise
    except Exception as exc:  # noqa: BLE001 - `datasets`, fsspec and pyarrow raise many types
        raise PrepareDataError(f"failed to open {where}: {_one_line(exc)}; {fix}") from exc

    number = 0  # records yielded so far
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001
            # Readers parse records in blocks, so the bad record can lie anywhere after the last good one.
            read_so_far = f" after record {number}" if number else ""
            raise PrepareDataError(f"failed to read {where}{read_so_far}: {_one_line(exc)}; {fix}") from exc
        if text_field not in batch:
            fields = ", ".join(repr(name) for name in batch) or "none"
            raise PrepareDataError(
                f"record {number + 1} of {where} has no field {text_field!r} (fields: {fields}); pass the right --text_field"
            )
        for text in batch[text_field]:
            number += 1
            _check_record_text(text, text_field, f"record {number} of {where}")
            yield text


def _check_record_text(text: Any, text_field: str, where: str) -> None:
    if text is None:
        raise PrepareDataError(f"{where} has no value in field {text_field!r} (null or missing); fix or drop that record")
    if not isinstance(text, str):
        raise PrepareDataError(
            f"{where}: field {text_field!r} is {type(text).__name__}, expected a string; pass a text column as --text_field"
        )
    match = _SURROGATE.search(text)
    if match:
        raise PrepareDataError(
            f"{where} contains the lone surrogate U+{ord(match.group()):04X} at character {match.start()}, "
            f"which is not valid Unicode text; fix or drop that record"
        )


# --------------------------------------------------------------------------------------------------
# Tokenizing


class _Progress:
    """Progress lines (documents, tokens, rate) on stderr for tokenizing that runs longer than a moment."""

    def __init__(self, label: str, interval_s: float | None = None):
        self.label = label
        self.interval_s = PROGRESS_INTERVAL_S if interval_s is None else interval_s
        self.start = time.perf_counter()
        self.last_print = self.start
        self.printed = False
        self.documents = 0
        self.tokens = 0

    def update(self, documents: int, tokens: int) -> None:
        self.documents += documents
        self.tokens += tokens
        now = time.perf_counter()
        if now - self.last_print >= self.interval_s:
            self.last_print = now
            self._print(now)

    def finish(self) -> None:
        if self.printed:
            self._print(time.perf_counter())

    def _print(self, now: float) -> None:
        self.printed = True
        rate = self.tokens / max(now - self.start, 1e-9)
        print(
            f"tokenizing {self.label}: {self.documents:,} documents, {self.tokens:,} tokens, "
            f"{rate / 1e6:.2f}M tokens/s",
            file=sys.stderr,
            flush=True,
        )


def _code_points(text: str) -> np.ndarray:
    # UTF-32 gives one 4-byte unit per character, so the buffer is the array of code points.
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


def _char_vocab_and_ids(code_points: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Return the sorted character vocabulary and the id of every code point."""
    present = np.zeros(_UNICODE_SIZE, dtype=bool)
    present[code_points] = True
    vocab_points = np.flatnonzero(present)
    return [chr(point) for point in vocab_points], _ids_from_vocab_points(code_points, vocab_points)


def _ids_from_vocab_points(code_points: np.ndarray, vocab_points: np.ndarray) -> np.ndarray:
    # A lookup table over all of Unicode (4.5 MB) maps code points to ids much faster than a sort.
    lookup = np.zeros(_UNICODE_SIZE, dtype=np.uint32)
    lookup[vocab_points] = np.arange(len(vocab_points), dtype=np.uint32)
    return lookup[code_points]


def encode_bpe_parallel(encoding: Any, texts: list[str], num_threads: int) -> list[list[int]]:
    """Encode texts with ``encoding.encode_ordinary`` on several threads.

    tiktoken (checked with 0.14) releases the GIL while it encodes, so threads use several cores.
    Each thread takes a contiguous group of texts rather than one text per task, because
    tiktoken's encode_ordinary_batch spends more time scheduling than encoding on short documents.

    Args:
        encoding: a tiktoken.Encoding, or any object with encode_ordinary(str) -> list[int].
        texts: the texts to encode.
        num_threads: threads to use; 1 encodes in the calling thread.

    Returns:
        The ids of each text, in the order of ``texts``.
    """
    if num_threads == 1 or len(texts) < 2:
        return [encoding.encode_ordinary(text) for text in texts]
    groups = min(len(texts), num_threads * 4)
    bounds = [len(texts) * i // groups for i in range(groups + 1)]

    def encode_group(index: int) -> list[list[int]]:
        return [encoding.encode_ordinary(text) for text in texts[bounds[index] : bounds[index + 1]]]

    with ThreadPoolExecutor(num_threads, thread_name_prefix="bpe") as pool:
        return [ids for group in pool.map(encode_group, range(groups)) for ids in group]


def _encode_single_text_gpt2(text: str, encoding: Any, num_threads: int, progress: _Progress) -> np.ndarray:
    pieces = split_text_for_bpe(text)
    arrays = []
    group = max(1, num_threads * 4)
    for start in range(0, len(pieces), group):
        for ids in encode_bpe_parallel(encoding, pieces[start : start + group], num_threads):
            arrays.append(np.asarray(ids, dtype=np.uint32))
            progress.update(0, len(ids))
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.uint32)


@dataclasses.dataclass
class _Tokenized:
    """Token ids written to train.bin and val.bin in the temporary folder, with their vocabulary."""

    vocab: list[str] | None
    vocab_size: int
    dtype: str
    train_tokens: int
    val_tokens: int
    train_documents: int = 0
    val_documents: int = 0
    skipped_documents: int = 0


def _tokenize_single_text(
    text: str, tokenizer: str, encoding: Any, args: argparse.Namespace, out_dir: Path, label: str
) -> _Tokenized:
    """Tokenize one text and split it contiguously: the first (1 - val_fraction) of the tokens are train."""
    match = _SURROGATE.search(text)
    if match:
        raise PrepareDataError(f"{label} contains the lone surrogate U+{ord(match.group()):04X}, which is not valid Unicode")
    progress = _Progress(label)
    if tokenizer == "char":
        code_points = _code_points(text)
        if args.max_tokens is not None:
            code_points = code_points[: args.max_tokens]
        vocab, ids = _char_vocab_and_ids(code_points)
        vocab_size = len(vocab)
        progress.update(1, len(ids))
    else:
        ids = _encode_single_text_gpt2(text, encoding, args.num_threads, progress)
        if args.max_tokens is not None:
            ids = ids[: args.max_tokens]
        vocab, vocab_size = None, encoding.n_vocab
        progress.update(1, 0)
    progress.finish()

    dtype = dtype_for_vocab(vocab_size)
    n_train = int(len(ids) * (1.0 - args.val_fraction))
    file_dtype = np.dtype(dtype).newbyteorder("<")
    ids[:n_train].astype(file_dtype).tofile(out_dir / "train.bin")
    ids[n_train:].astype(file_dtype).tofile(out_dir / "val.bin")
    return _Tokenized(vocab, vocab_size, dtype, n_train, len(ids) - n_train)


class _DocumentSplitWriter:
    """Appends each document's ids to train or val files by a seeded draw per document.

    Record k in input order goes to val when the k-th value of random.Random(seed).random() is below
    val_fraction. If that leaves val without documents, the train document with the smallest draw
    moves to val. If it leaves train empty, the val document with the largest draw moves to train.
    Small corpora thus still get two non-empty splits, and the outcome depends only on the input and
    the seed.
    """

    def __init__(self, out_dir: Path, seed: int, val_fraction: float, file_dtype: np.dtype):
        self.out_dir = out_dir
        self.rng = random.Random(seed)
        self.val_fraction = val_fraction
        self.file_dtype = file_dtype
        self.paths = {"train": out_dir / "train.raw", "val": out_dir / "val.raw"}
        self.files = {split: open(path, "wb") for split, path in self.paths.items()}
        self.tokens = {"train": 0, "val": 0}
        self.documents = {"train": 0, "val": 0}
        # The document that moves if the other split ends up empty: (draw, start, end) in tokens.
        self.min_train: tuple[float, int, int] | None = None
        self.max_val: tuple[float, int, int] | None = None

    def draw(self) -> float:
        """Draw the seeded value for the next record; call once per record, empty ones included."""
        return self.rng.random()

    def add(self, ids: np.ndarray, draw: float) -> None:
        split = "val" if draw < self.val_fraction else "train"
        start = self.tokens[split]
        self.files[split].write(ids.astype(self.file_dtype, copy=False).tobytes())
        self.tokens[split] += len(ids)
        self.documents[split] += 1
        span = (draw, start, start + len(ids))
        if split == "train" and (self.min_train is None or draw < self.min_train[0]):
            self.min_train = span
        if split == "val" and (self.max_val is None or draw > self.max_val[0]):
            self.max_val = span

    def finish(self) -> None:
        for file in self.files.values():
            file.close()
        total = self.documents["train"] + self.documents["val"]
        if total == 1:
            raise PrepareDataError(
                "the input has a single non-empty document, so train and val cannot both get one; "
                "pass more documents (or a larger --max_tokens), or a single text file, which is split by tokens"
            )
        if self.documents["val"] == 0 and self.min_train is not None:
            self._move_document("train", "val", self.min_train)
        elif self.documents["train"] == 0 and self.max_val is not None:
            self._move_document("val", "train", self.max_val)

    def _move_document(self, source: str, target: str, span: tuple[float, int, int]) -> None:
        _, start, end = span
        itemsize = self.file_dtype.itemsize
        remaining_path = self.out_dir / f"{source}.remaining"
        with (
            open(self.paths[source], "rb") as src,
            open(remaining_path, "wb") as remaining,
            open(self.paths[target], "ab") as dst,
        ):
            _copy_bytes(src, remaining, 0, start * itemsize)
            _copy_bytes(src, dst, start * itemsize, end * itemsize)
            _copy_bytes(src, remaining, end * itemsize, self.tokens[source] * itemsize)
        os.replace(remaining_path, self.paths[source])
        self.tokens[source] -= end - start
        self.tokens[target] += end - start
        self.documents[source] -= 1
        self.documents[target] += 1


def _copy_bytes(src, dst, start: int, end: int) -> None:
    src.seek(start)
    remaining = end - start
    while remaining > 0:
        chunk = src.read(min(remaining, COPY_CHUNK_TOKENS * 4))
        if not chunk:
            raise PrepareDataError(f"{src.name} ended {remaining} bytes early while moving a document between splits")
        dst.write(chunk)
        remaining -= len(chunk)


def _tokenize_documents(
    documents: Iterable[str], tokenizer: str, encoding: Any, args: argparse.Namespace, out_dir: Path, label: str
) -> _Tokenized:
    """Tokenize a stream of documents in parallel batches and assign each one to train or val.

    GPT-2 ids are written in their final uint16 form. Characters are written as uint32 code points
    first, because the vocabulary is known only after the last document, and are then mapped to ids.
    """
    is_char = tokenizer == "char"
    raw_dtype = np.dtype("<u4") if is_char else np.dtype(dtype_for_vocab(encoding.n_vocab)).newbyteorder("<")
    writer = _DocumentSplitWriter(out_dir, args.seed, args.val_fraction, raw_dtype)
    seen_points = np.zeros(_UNICODE_SIZE, dtype=bool) if is_char else None
    progress = _Progress(label)
    skipped = 0
    total_tokens = 0
    limit = args.max_tokens

    def flush(batch: list[tuple[str, float]]) -> bool:
        """Encode and write a batch; return False once --max_tokens is reached."""
        nonlocal total_tokens
        texts = [text for text, _ in batch]
        if is_char:
            points = _code_points("".join(texts))
            per_document = np.split(points, np.cumsum([len(text) for text in texts])[:-1])
        else:
            per_document = [
                np.asarray(ids + [GPT2_EOT_TOKEN], dtype=np.uint32)
                for ids in encode_bpe_parallel(encoding, texts, args.num_threads)
            ]
        written_documents, written_tokens = 0, 0
        reached_limit = False
        for ids, (_, draw) in zip(per_document, batch):
            if limit is not None and total_tokens + len(ids) >= limit:
                # The last document is cut so that the output contains exactly --max_tokens tokens.
                ids = ids[: limit - total_tokens]
                reached_limit = True
            writer.add(ids, draw)
            if is_char:
                seen_points[ids] = True
            total_tokens += len(ids)
            written_documents += 1
            written_tokens += len(ids)
            if reached_limit:
                break
        progress.update(written_documents, written_tokens)
        return not reached_limit

    try:
        batch: list[tuple[str, float]] = []
        batch_chars = 0
        for text in documents:
            draw = writer.draw()
            if not text:
                skipped += 1
                continue
            batch.append((text, draw))
            batch_chars += len(text)
            if batch_chars >= BATCH_CHARS:
                if not flush(batch):
                    batch = []
                    break
                batch, batch_chars = [], 0
        if batch:
            flush(batch)
    finally:
        for file in writer.files.values():
            file.close()
    progress.finish()
    if total_tokens == 0:
        raise PrepareDataError(f"{label} is empty: it has no document with text ({skipped} empty documents skipped)")
    writer.finish()

    if is_char:
        vocab_points = np.flatnonzero(seen_points)
        vocab: list[str] | None = [chr(point) for point in vocab_points]
        vocab_size = len(vocab_points)
    else:
        vocab, vocab_size = None, encoding.n_vocab
    dtype = dtype_for_vocab(vocab_size)
    for split in ("train", "val"):
        if is_char:
            _map_code_points_file(writer.paths[split], out_dir / f"{split}.bin", vocab_points, dtype)
            writer.paths[split].unlink()
        else:
            os.replace(writer.paths[split], out_dir / f"{split}.bin")
    return _Tokenized(
        vocab,
        vocab_size,
        dtype,
        writer.tokens["train"],
        writer.tokens["val"],
        writer.documents["train"],
        writer.documents["val"],
        skipped,
    )


def _map_code_points_file(src: Path, dst: Path, vocab_points: np.ndarray, dtype: str) -> None:
    file_dtype = np.dtype(dtype).newbyteorder("<")
    with open(src, "rb") as source, open(dst, "wb") as target:
        while chunk := source.read(COPY_CHUNK_TOKENS * 4):
            points = np.frombuffer(chunk, dtype="<u4")
            target.write(_ids_from_vocab_points(points, vocab_points).astype(file_dtype).tobytes())


# --------------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    """Build the command-line parser of prepare_data.py."""
    parser = argparse.ArgumentParser(
        prog="prepare_data.py",
        description="Tokenize a dataset into train.bin, val.bin and meta.json for train.py.",
    )

    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        default="shakespeare_char",
        help="shakespeare_char: Tiny Shakespeare by character; shakespeare: Tiny Shakespeare with GPT-2 BPE; "
        f"fineweb / fineweb-edu: streamed from {FINEWEB_REPOS['fineweb']} / {FINEWEB_REPOS['fineweb-edu']} "
        f"({FINEWEB_CONFIG}) with GPT-2 BPE; custom: the files given by --input (default: shakespeare_char)",
    )

    parser.add_argument(
        "--input",
        metavar="PATH",
        help="local input instead of a download or stream: a text file, a folder of .txt files (one document "
        "per file), or JSONL / parquet files or a folder of them; for shakespeare datasets a copy of input.txt "
        "(default: <data_dir>/input.txt if present, else download)",
    )

    parser.add_argument("--data_dir", metavar="DIR", help="output folder (default: data/<dataset>)")

    parser.add_argument(
        "--tokenizer",
        choices=("char", "gpt2"),
        help="char: one id per Unicode character, documents concatenated without a separator; gpt2: GPT-2 BPE "
        f"(tiktoken {TIKTOKEN_ENCODING}), each document followed by <|endoftext|> (id {GPT2_EOT_TOKEN}) "
        "(default: char for shakespeare_char and custom text files, gpt2 otherwise)",
    )

    parser.add_argument(
        "--text_field",
        metavar="NAME",
        help="column that contains the document text in JSONL or parquet records (default: text)",
    )

    parser.add_argument(
        "--max_tokens",
        type=int,
        metavar="N",
        help="keep only the first N tokens of the input, train and val together "
        f"(default: {DEFAULT_FINEWEB_MAX_TOKENS:,} for fineweb and fineweb-edu, all tokens otherwise)",
    )

    parser.add_argument(
        "--val_fraction",
        type=float,
        default=DEFAULT_VAL_FRACTION,
        metavar="F",
        help="fraction of tokens (single text) or probability per document (document corpus) for val "
        f"(default: {DEFAULT_VAL_FRACTION})",
    )

    parser.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help=f"seed of the per-document train/val draw; a single text is split without it (default: {DEFAULT_SEED})",
    )

    parser.add_argument(
        "--block_size",
        type=int,
        metavar="N",
        help="context length in tokens that train.py will use; when given, each split must hold at least "
        "N + 1 tokens (default: not checked)",
    )

    default_threads = _available_cpus()
    parser.add_argument(
        "--num_threads",
        type=int,
        default=default_threads,
        metavar="N",
        help=f"threads for GPT-2 BPE encoding (default: the CPU cores available to this process, {default_threads})",
    )
    return parser


def _available_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _check_args(args: argparse.Namespace) -> None:
    """Fill per-dataset defaults into ``args`` and reject flag combinations that cannot work."""
    dataset = args.dataset
    if args.data_dir is None:
        args.data_dir = os.path.join("data", dataset)

    if dataset in FIXED_TOKENIZERS and args.tokenizer not in (None, FIXED_TOKENIZERS[dataset]):
        alternative = {
            "shakespeare_char": "--dataset shakespeare",
            "shakespeare": "--dataset shakespeare_char",
        }.get(dataset, "--dataset custom --input FILES")
        raise PrepareDataError(
            f"--dataset {dataset} uses --tokenizer {FIXED_TOKENIZERS[dataset]}, not {args.tokenizer}; "
            f"for the other tokenizer use {alternative}"
        )
    if dataset == "custom" and args.input is None:
        raise PrepareDataError("--dataset custom needs --input PATH (a text file, a folder of .txt files, or JSONL/parquet files)")

    if not (0.0 < args.val_fraction < 1.0):
        raise PrepareDataError(f"--val_fraction must be between 0 and 1 (exclusive), got {args.val_fraction}")
    if args.max_tokens is None and dataset in FINEWEB_REPOS:
        args.max_tokens = DEFAULT_FINEWEB_MAX_TOKENS
    if args.max_tokens is not None and args.max_tokens < 2:
        raise PrepareDataError(f"--max_tokens must be at least 2 so that train and val both get a token, got {args.max_tokens}")
    if args.block_size is not None and args.block_size < 1:
        raise PrepareDataError(f"--block_size must be a positive number of tokens, got {args.block_size}")
    if args.num_threads < 1:
        raise PrepareDataError(f"--num_threads must be at least 1, got {args.num_threads}")


@dataclasses.dataclass
class PrepareResult:
    """Output of prepare(): the meta dictionary, the output folder and run statistics."""

    meta: dict
    data_dir: Path
    seconds: float
    train_documents: int
    val_documents: int
    skipped_documents: int

    def summary_line(self) -> str:
        """Format dataset, tokenizer, vocab_size, token counts, dtype and seconds as one line."""
        meta = self.meta
        documents = ""
        if self.train_documents or self.val_documents:
            documents = f" ({self.train_documents:,} / {self.val_documents:,} documents"
            documents += f", {self.skipped_documents:,} empty skipped)" if self.skipped_documents else ")"
        return (
            f"prepared {meta['dataset']}: tokenizer {meta['tokenizer']}, vocab_size {meta['vocab_size']:,}, "
            f"train {meta['train_tokens']:,} tokens, val {meta['val_tokens']:,} tokens{documents}, "
            f"dtype {meta['dtype']}, {self.seconds:.2f} s -> {self.data_dir}"
        )


def prepare(argv: list[str] | None = None) -> PrepareResult:
    """Run prepare_data.py with command-line arguments and write the output folder.

    Args:
        argv: arguments without the program name; sys.argv[1:] when None.

    Returns:
        The written meta dictionary, output folder and statistics.

    Raises:
        PrepareDataError: bad input, flags or environment. --data_dir is then left as it was.
        SystemExit: argparse rejected the arguments.
    """
    start = time.perf_counter()
    args = build_parser().parse_args(argv)
    _check_args(args)
    data_dir = Path(args.data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        raise PrepareDataError(f"--data_dir {data_dir} exists and is not a folder")

    input_kind, input_files = ("stream", []) if args.input is None else _list_input_files(Path(args.input))
    if args.input is not None:
        _check_input_kind(args, input_kind, Path(args.input))
    if args.tokenizer is not None:
        tokenizer = args.tokenizer
    elif args.dataset in FIXED_TOKENIZERS:
        tokenizer = FIXED_TOKENIZERS[args.dataset]
    else:
        tokenizer = "char" if input_kind == "text" else "gpt2"
    if args.text_field is None:
        args.text_field = "text"

    # Load the vocabulary before reading any data, so a missing vocabulary fails at once.
    encoding = load_gpt2_encoding() if tokenizer == "gpt2" else None

    created_parents = _missing_parents(data_dir)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    # A hidden sibling of data_dir, on the same file system so that the final moves are renames.
    # mkdir() rather than tempfile.mkdtemp(), whose mode 0700 would stay on a renamed data_dir.
    out_dir = data_dir.parent / f".{data_dir.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        out_dir.mkdir()
    except OSError as exc:
        raise PrepareDataError(f"cannot create a temporary folder next to --data_dir {data_dir}: {exc}") from exc
    try:
        tokenized, source, sha256 = _tokenize_input(args, input_kind, input_files, tokenizer, encoding, out_dir, data_dir)
        _check_split_sizes(tokenized, args)
        meta = {
            "dataset": args.dataset,
            "tokenizer": tokenizer,
            "tiktoken_encoding": TIKTOKEN_ENCODING if tokenizer == "gpt2" else None,
            "vocab": tokenized.vocab,
            "vocab_size": tokenized.vocab_size,
            "eot_token": GPT2_EOT_TOKEN if tokenizer == "gpt2" else None,
            "dtype": tokenized.dtype,
            "train_tokens": tokenized.train_tokens,
            "val_tokens": tokenized.val_tokens,
            "source": source,
            "sha256": sha256,
            "val_fraction": args.val_fraction,
            "seed": args.seed,
        }
        with open(out_dir / "meta.json", "w", encoding="utf-8") as file:
            json.dump(meta, file, indent=2, ensure_ascii=False)
            file.write("\n")
        _move_into_place(out_dir, data_dir)
    except OSError as exc:
        _remove_partial_output(out_dir, created_parents)
        raise PrepareDataError(f"could not prepare --data_dir {data_dir}: {exc}") from exc
    except BaseException:
        _remove_partial_output(out_dir, created_parents)
        raise

    return PrepareResult(
        meta=meta,
        data_dir=data_dir,
        seconds=time.perf_counter() - start,
        train_documents=tokenized.train_documents,
        val_documents=tokenized.val_documents,
        skipped_documents=tokenized.skipped_documents,
    )


def _remove_partial_output(out_dir: Path, created_parents: list[Path]) -> None:
    shutil.rmtree(out_dir, ignore_errors=True)
    for parent in created_parents:
        try:
            parent.rmdir()
        except OSError:
            break


def _check_input_kind(args: argparse.Namespace, kind: str, path: Path) -> None:
    if args.dataset in ("shakespeare_char", "shakespeare") and not path.is_file():
        raise PrepareDataError(f"--dataset {args.dataset} needs --input to name a copy of input.txt, but {path} is a folder")
    if args.dataset in ("shakespeare_char", "shakespeare") and kind == "records":
        raise PrepareDataError(
            f"--input {path} is a JSONL/parquet file but --dataset {args.dataset} reads plain text; "
            f"use --dataset custom --text_field NAME"
        )
    if args.dataset in FINEWEB_REPOS and kind == "text":
        raise PrepareDataError(
            f"--dataset {args.dataset} with --input reads local JSONL or parquet copies, but {path} is plain text; "
            f"use --dataset custom"
        )
    if kind == "text" and args.text_field is not None:
        raise PrepareDataError(f"--text_field applies to JSONL or parquet input, but --input {path} is plain text")


def _tokenize_input(
    args: argparse.Namespace,
    kind: str,
    files: list[Path],
    tokenizer: str,
    encoding: Any,
    out_dir: Path,
    data_dir: Path,
) -> tuple[_Tokenized, str, str | None]:
    """Read the input that the flags name and tokenize it into ``out_dir``.

    Returns the tokenized result, the source (path or address) and its SHA-256, which is None for a stream.
    """
    if args.dataset in ("shakespeare_char", "shakespeare"):
        text, source, sha256 = _read_tiny_shakespeare(args, data_dir, out_dir)
        return _tokenize_single_text(text, tokenizer, encoding, args, out_dir, source), source, sha256

    if kind == "stream":
        repo = FINEWEB_REPOS[args.dataset]
        documents = _iter_hub_stream(args.dataset, args.text_field)
        tokenized = _tokenize_documents(documents, tokenizer, encoding, args, out_dir, repo)
        return tokenized, f"https://huggingface.co/datasets/{repo} ({FINEWEB_CONFIG})", None

    source = str(Path(args.input))
    root = Path(args.input)
    if kind == "text" and len(files) == 1:
        # One text file, given directly or as the only file in a folder, is a single text.
        text, sha256 = read_text_file(files[0])
        if not text:
            raise PrepareDataError(f"{files[0]} is empty; pass a file with text")
        return _tokenize_single_text(text, tokenizer, encoding, args, out_dir, source), source, sha256

    if kind == "text":
        documents: Iterable[str] = _iter_text_files(files)
        hashes = [_sha256_file(file) for file in files]
    else:
        # JSON must be UTF-8, so a bad byte is reported with its offset here rather than as a parser
        # error later. Parquet is binary, so it is only hashed.
        hashes = [_sha256_file(file) if file.suffix.lower() == ".parquet" else scan_utf8_file(file) for file in files]
        documents = _iter_record_files(files, args.text_field)
    sha256 = hashes[0] if root.is_file() else _combined_sha256(files, root, hashes)
    tokenized = _tokenize_documents(documents, tokenizer, encoding, args, out_dir, source)
    return tokenized, source, sha256


def _read_tiny_shakespeare(args: argparse.Namespace, data_dir: Path, out_dir: Path) -> tuple[str, str, str]:
    """Read Tiny Shakespeare from --input, from <data_dir>/input.txt, or by downloading it.

    A local copy whose SHA-256 differs from the standard file only gets a warning, so edited or trimmed
    copies still work, and meta.json records the hash that was read. A download with the wrong hash is
    an error.
    """
    local = Path(args.input) if args.input is not None else data_dir / "input.txt"
    if args.input is not None or local.is_file():
        text, sha256 = read_text_file(local)
        if not text:
            raise PrepareDataError(f"{local} is empty; pass a copy of Tiny Shakespeare's input.txt")
        if sha256 != TINY_SHAKESPEARE_SHA256:
            print(
                f"warning: {local} has SHA-256 {sha256}, not that of the standard Tiny Shakespeare input.txt "
                f"({TINY_SHAKESPEARE_SHA256}); using it as given",
                file=sys.stderr,
            )
        return text, str(local), sha256

    data = _download(TINY_SHAKESPEARE_URL, local)
    sha256 = hashlib.sha256(data).hexdigest()
    if sha256 != TINY_SHAKESPEARE_SHA256:
        raise PrepareDataError(
            f"the download from {TINY_SHAKESPEARE_URL} has SHA-256 {sha256}, expected {TINY_SHAKESPEARE_SHA256}; "
            f"download it again, or put a verified copy at {local} or pass --input PATH"
        )
    # Keep the download next to the output so that the next run needs no network.
    (out_dir / "input.txt").write_bytes(data)
    return data.decode("utf-8"), TINY_SHAKESPEARE_URL, sha256


def _download(url: str, local: Path) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            return response.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise PrepareDataError(
            f"could not download {url} ({_one_line(reason)}); put input.txt at {local} or pass --input PATH"
        ) from exc


def _check_split_sizes(tokenized: _Tokenized, args: argparse.Namespace) -> None:
    needed = 1 if args.block_size is None else args.block_size + 1
    for split, tokens in (("train", tokenized.train_tokens), ("val", tokenized.val_tokens)):
        if tokens >= needed:
            continue
        if args.block_size is None:
            raise PrepareDataError(
                f"the {split} split is empty ({tokenized.train_tokens + tokenized.val_tokens} tokens in all); "
                f"use a longer input or change --val_fraction"
            )
        raise PrepareDataError(
            f"the {split} split has {tokens:,} tokens, fewer than --block_size {args.block_size} + 1 = {needed:,}; "
            f"use a longer input, a larger --val_fraction, or a smaller --block_size"
        )


def _missing_parents(path: Path) -> list[Path]:
    """Return the ancestors of ``path`` that do not exist yet, deepest first."""
    missing = []
    parent = path.absolute().parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    return missing


def _move_into_place(out_dir: Path, data_dir: Path) -> None:
    """Move the finished files from the temporary folder into ``data_dir``.

    A new data_dir is one rename. Into an existing folder, the old meta.json is removed first and the
    new one moved last. A reader thus sees the old data, no meta.json (load_meta then raises an error
    that names the prepare_data.py command), or the new data. Other files in data_dir are kept.
    """
    if not data_dir.exists():
        os.rename(out_dir, data_dir)
        return
    (data_dir / "meta.json").unlink(missing_ok=True)
    names = sorted(path.name for path in out_dir.iterdir() if path.name != "meta.json")
    for name in names + ["meta.json"]:
        os.replace(out_dir / name, data_dir / name)
    out_dir.rmdir()


def _prepare_command_for(data_dir: Path) -> str:
    dataset = data_dir.name if data_dir.name in DATASETS else None
    if dataset is None:
        return f"python prepare_data.py --dataset DATASET --data_dir {data_dir}"
    if data_dir == Path("data") / dataset:
        return f"python prepare_data.py --dataset {dataset}"
    return f"python prepare_data.py --dataset {dataset} --data_dir {data_dir}"


def _one_line(error: object, limit: int = 200) -> str:
    """Format an exception or reason as one short line for an error message."""
    if isinstance(error, BaseException):
        text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    else:
        text = str(error)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    """Run prepare() and print its one-line summary. Return the process exit code.

    An error in the input, flags or environment prints one line to stderr and returns 1.
    """
    try:
        result = prepare(argv)
    except PrepareDataError as exc:
        print(f"prepare_data.py: error: {exc}", file=sys.stderr)
        return 1
    print(result.summary_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
