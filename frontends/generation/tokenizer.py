"""Byte-level BPE tokenizers (GPT-2's scheme) through the Hugging Face ``tokenizers`` library.

Train one on a corpus, save and load it as ``tokenizer.json`` (the HF format, so a GPT-2 or any
other local HF tokenizer file loads too), and go text -> ids -> text. Byte-level means every
string round-trips, whatever its characters. :class:`StreamDecoder` turns tokens into text as
they arrive without printing half of a multi-byte character.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lbdl_graph.errors import GenerationError

__all__ = ["EOS", "StreamDecoder", "Tokenizer"]

EOS = "<|endoftext|>"
_FILE = "tokenizer.json"


def _lib() -> Any:
    try:
        import tokenizers
    except ImportError:
        raise GenerationError("the 'tokenizers' package is not installed",
                              hint="pip install 'lbdl-graph[generate]'") from None
    return tokenizers


class Tokenizer:
    """A ``tokenizers.Tokenizer`` with the few calls generation needs."""

    def __init__(self, inner: Any, source: str = "") -> None:
        self.inner = inner
        self.source = source

    # ---- building ----
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 1024, *, min_frequency: int = 2,
              special_tokens: Sequence[str] = (EOS,)) -> Tokenizer:
        """Learn a byte-level BPE of ``vocab_size`` tokens (256 bytes + merges + specials)."""
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or \
                vocab_size < 256 + len(special_tokens):
            raise GenerationError(f"vocab_size must be an integer >= {256 + len(special_tokens)}"
                                  f" (the 256 bytes and the special tokens), got {vocab_size!r}")
        tk = _lib()
        t = tk.Tokenizer(tk.models.BPE())
        t.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
        t.decoder = tk.decoders.ByteLevel()
        trainer = tk.trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency,
            special_tokens=list(special_tokens), show_progress=False,
            initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
        t.train_from_iterator(texts, trainer)
        return cls(t, "trained")

    @classmethod
    def bytes_only(cls) -> Tokenizer:
        """The merge-free byte-level tokenizer: ``<|endoftext|>`` then the 256 bytes (257 ids),
        for models trained on raw bytes or without a tokenizer of their own."""
        t = cls.train([], vocab_size=257)
        t.source = "bytes"
        return t

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """Read a ``tokenizer.json`` (or a directory holding one), e.g. a local HF file."""
        p = Path(path)
        if p.is_dir():
            p = p / _FILE
        if not p.is_file():
            raise GenerationError(f"cannot read tokenizer {p}: no such file")
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise GenerationError(f"cannot read tokenizer {p}: {e}") from None
        try:
            inner = _lib().Tokenizer.from_str(text)
        except Exception as e:  # tokenizers raises its own Exception subclass
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise GenerationError(f"{p} is not a valid tokenizer.json: {first}") from None
        return cls(inner, str(p))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``tokenizer.json`` (into ``path`` if it is a directory) atomically."""
        from lbdl_graph.frontends.cli.common import CliError, atomic_write

        p = Path(path)
        if p.is_dir():
            p = p / _FILE
        try:
            return atomic_write(p, self.inner.to_str(pretty=True))
        except CliError as e:
            raise GenerationError(str(e)) from None

    # ---- use ----
    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""
        return int(self.inner.get_vocab_size(with_added_tokens=True))

    def token_id(self, token: str) -> int | None:
        """The id of ``token`` (e.g. ``"<|endoftext|>"``), or None."""
        i = self.inner.token_to_id(token)
        return None if i is None else int(i)

    @property
    def eos_id(self) -> int | None:
        """The id of ``<|endoftext|>`` if the vocabulary has it."""
        return self.token_id(EOS)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``."""
        if not isinstance(text, str):
            raise GenerationError(f"encode expects a str, got {type(text).__name__}")
        return [int(i) for i in self.inner.encode(text, add_special_tokens=False).ids]

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        """Text of ``ids``; ids outside the vocabulary are a GenerationError."""
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise GenerationError(f"token id {bad[0]} is not in the tokenizer's vocabulary "
                                  f"[0, {self.vocab_size})")
        return str(self.inner.decode(ids, skip_special_tokens=skip_special_tokens))

    def stream(self) -> StreamDecoder:
        """An incremental decoder for streaming output."""
        return StreamDecoder(self)


class StreamDecoder:
    """Feed token ids one at a time; :meth:`push` returns the text that is complete."""

    def __init__(self, tokenizer: Tokenizer, hold: int = 8) -> None:
        self.tokenizer = tokenizer
        self.hold = hold
        self._pending: list[int] = []

    def push(self, token: int) -> str:
        """The new text after ``token`` ('' while it ends inside a character)."""
        self._pending.append(int(token))
        text = self.tokenizer.decode(self._pending)
        if text.endswith("\ufffd") and len(self._pending) < self.hold:
            return ""
        self._pending.clear()
        return text

    def flush(self) -> str:
        """Whatever is still held back."""
        text = self.tokenizer.decode(self._pending) if self._pending else ""
        self._pending.clear()
        return text
