"""A Whisper-style speech recogniser (book section 6.5; Radford et al. 2022), front end included.

:class:`LogMel` computes a log-mel spectrogram *in the graph*, so the exported ONNX model takes
raw waveforms: frames are gathered from the signal by a constant index table, multiplied by a
Hann window and by the cosine and sine DFT bases (one MatMul each), the power spectrum goes
through a triangular mel filter bank and ``log(. + 1e-6)``. :class:`Whisper` is the
encoder-decoder transformer on top: two 1-D convolutions with GELU (the second of stride 2),
sinusoidal positions and pre-LN encoder blocks over the audio frames; a decoder of learned
positions, causal self-attention and cross-attention over token ids, its output layer tied to
the token table (scaled by d^-1/2). ``forward(wave, tokens)`` -> next-token logits (N, S, V).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lbdl_graph import ops
from lbdl_graph.errors import ShapeError

from .. import functional as F
from ..layers import (
    Conv1d,
    Embedding,
    LayerNorm,
    LearnedPositionalEncoding,
    ModuleList,
    SinusoidalPositionalEncoding,
)
from ..module import Module
from ..tensor import Tensor, as_tensor, error
from ..trace import InputSpec
from ._registry import ZooEntry
from .transformer import DecoderBlock, TransformerBlock

__lbdl_user_code__ = True

__all__ = ["ZOO_ENTRIES", "LogMel", "Whisper", "WhisperConfig", "mel_filterbank"]


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular filters (n_fft // 2 + 1, n_mels) equally spaced on the mel scale."""
    def mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = hz(np.linspace(0.0, mel(np.array(sample_rate / 2)), n_mels + 2))
    lo, mid, hi = edges[:-2], edges[1:-1], edges[2:]
    f = freqs[:, None]
    up, down = (f - lo) / (mid - lo), (hi - f) / (hi - mid)
    return np.maximum(0.0, np.minimum(up, down)).astype(np.float32)


@dataclass(frozen=True)
class WhisperConfig:
    """Audio (samples per clip, rate, FFT size, hop, mel bins) and transformer sizes."""

    num_samples: int = 2400
    sample_rate: int = 2000
    n_fft: int = 64
    hop: int = 32
    n_mels: int = 20
    vocab_size: int = 13
    max_tokens: int = 8
    d_model: int = 64
    num_heads: int = 4
    d_ff: int = 128
    encoder_layers: int = 2
    decoder_layers: int = 2

    @property
    def num_frames(self) -> int:
        """STFT frames of one clip (no padding)."""
        return 1 + (self.num_samples - self.n_fft) // self.hop


class LogMel(Module):
    """``forward(wave)``: waveforms (N, num_samples) -> log-mel spectrogram (N, frames, mels)."""

    def __init__(self, c: WhisperConfig) -> None:
        super().__init__()
        if c.num_samples < c.n_fft or c.hop < 1:
            raise error(ShapeError, f"LogMel: need num_samples >= n_fft and hop >= 1 ({c})")
        self.c = c
        n = np.arange(c.n_fft)
        k = np.arange(c.n_fft // 2 + 1)
        window = 0.5 - 0.5 * np.cos(2 * np.pi * n / c.n_fft)
        angle = 2 * np.pi * np.outer(n, k) / c.n_fft
        self.frame_index = (np.arange(c.num_frames)[:, None] * c.hop + n[None]).astype(np.int64)
        self.cos_basis = (window[:, None] * np.cos(angle)).astype(np.float32)
        self.sin_basis = (window[:, None] * np.sin(angle)).astype(np.float32)
        self.mel = mel_filterbank(c.sample_rate, c.n_fft, c.n_mels)

    def forward(self, wave: Tensor) -> Tensor:
        """Frames, windowed DFT power, mel filter bank, log."""
        frames = Tensor(ops.gather(wave.value, as_tensor(self.frame_index).value, axis=1))
        re, im = frames @ self.cos_basis, frames @ self.sin_basis
        return ((re * re + im * im) @ self.mel + 1e-6).log()


class Whisper(Module):
    """``forward(wave, tokens)``: waveforms (N, L) and token ids (N, S) -> logits (N, S, V)."""

    def __init__(self, config: WhisperConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or WhisperConfig()
        self.frontend = LogMel(c)
        self.conv1 = Conv1d(c.n_mels, c.d_model, 3, padding=1)
        self.conv2 = Conv1d(c.d_model, c.d_model, 3, stride=2, padding=1)
        self.audio_pos = SinusoidalPositionalEncoding(c.d_model)
        self.encoder = ModuleList(TransformerBlock(c.d_model, c.num_heads, c.d_ff, act="gelu",
                                                   norm_first=True)
                                  for _ in range(c.encoder_layers))
        self.enc_norm = LayerNorm(c.d_model)
        self.tok = Embedding(c.vocab_size, c.d_model)
        self.tok_pos = LearnedPositionalEncoding(c.max_tokens, c.d_model)
        self.decoder = ModuleList(DecoderBlock(c.d_model, c.num_heads, c.d_ff, act="gelu",
                                               norm_first=True)
                                  for _ in range(c.decoder_layers))
        self.dec_norm = LayerNorm(c.d_model)

    def encode(self, wave: Tensor) -> Tensor:
        """Audio states (N, frames', D)."""
        mel = (self.frontend(wave) * 0.25).transpose(1, 2)  # (N, mels, frames), ~unit scale
        h = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).transpose(1, 2)
        h = self.audio_pos(h)
        for block in self.encoder:
            h = block(h)
        return self.enc_norm(h)

    def forward(self, wave: Tensor, tokens: Tensor) -> Tensor:
        """Teacher-forced next-token logits."""
        memory = self.encode(wave)
        x = self.tok_pos(self.tok(tokens))
        for block in self.decoder:
            x = block(x, memory)
        return (self.dec_norm(x) @ self.tok.weight.T) * self.config.d_model ** -0.5


ZOO_ENTRIES = [
    ZooEntry(
        name="whisper_tiny",
        config=WhisperConfig(d_model=32, d_ff=64, encoder_layers=1, decoder_layers=1,
                             max_tokens=16),
        build=Whisper,
        inputs={"wave": InputSpec(("N", 2400)), "tokens": InputSpec(("N", "S"), "int64")},
        outputs={"output": ("N", "S", 13)},
        description="Whisper-style: in-graph log-mel (64-point STFT, 20 mels), 2 convs, 1 "
                    "pre-LN encoder and 1 decoder block, d=32, tied output layer",
        task="speech recognition",
        int_high={"tokens": 13},
    ),
]
