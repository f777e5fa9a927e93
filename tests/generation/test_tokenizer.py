"""Byte-level BPE: training, tokenizer.json round trips (ours and Hugging Face's), streaming."""

from __future__ import annotations

import inspect
import json.decoder
from pathlib import Path

import pytest

pytest.importorskip("tokenizers")

from lbdl_graph.errors import GenerationError
from lbdl_graph.frontends.generation.tokenizer import EOS, Tokenizer

CORPUS = inspect.getsource(json.decoder)
TEXT = 'def scan(s, idx=0):\n    """Décodé — naïve 😀 text"""\n    return s[idx:]\n'


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train([CORPUS], vocab_size=400)


def test_trained_bpe_round_trips_any_text(tok: Tokenizer) -> None:
    assert tok.vocab_size == 400
    ids = tok.encode(TEXT)
    assert tok.decode(ids) == TEXT
    assert len(ids) < len(TEXT.encode()) * 0.7  # merges learned from the corpus compress it
    assert tok.eos_id == 0 and tok.token_id(EOS) == 0
    assert tok.decode(tok.encode("\x00\xff unseen ∑ bytes")) == "\x00\xff unseen ∑ bytes"


def test_save_and_load_tokenizer_json(tok: Tokenizer, tmp_path: Path) -> None:
    path = tok.save(tmp_path / "tokenizer.json")
    assert path.is_file()
    again = Tokenizer.load(tmp_path)  # a directory holding tokenizer.json works too
    assert again.encode(TEXT) == tok.encode(TEXT)
    assert again.decode(again.encode(TEXT)) == TEXT


def test_hugging_face_reads_ours_and_we_read_theirs(tok: Tokenizer, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    tok.save(tmp_path / "tokenizer.json")
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    assert hf.encode(TEXT) == tok.encode(TEXT)
    out = tmp_path / "hf"
    hf.save_pretrained(out)
    theirs = Tokenizer.load(out / "tokenizer.json")
    assert theirs.encode(TEXT) == tok.encode(TEXT)


def test_stream_decoder_never_splits_a_character(tok: Tokenizer) -> None:
    ids = tok.encode(TEXT)
    s = tok.stream()
    pieces = [s.push(i) for i in ids]
    pieces.append(s.flush())
    assert "".join(pieces) == TEXT
    assert not any("\ufffd" in p for p in pieces)


def test_bad_tokenizer_files_and_ids(tok: Tokenizer, tmp_path: Path) -> None:
    with pytest.raises(GenerationError, match="no such file"):
        Tokenizer.load(tmp_path / "missing.json")
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"model": {"type": "BPE", "vocab": 3}}')
    with pytest.raises(GenerationError, match=r"not a valid tokenizer\.json"):
        Tokenizer.load(bad)
    with pytest.raises(GenerationError, match="not in the tokenizer's vocabulary"):
        tok.decode([1, 400])
    with pytest.raises(GenerationError, match="vocab_size must be"):
        Tokenizer.train(["abc"], vocab_size=100)
    with pytest.raises(GenerationError, match="expects a str"):
        tok.encode(b"bytes")  # type: ignore[arg-type]
