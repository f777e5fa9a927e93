"""The zoo's Whisper front end and model: the in-graph log-mel equals a NumPy STFT, the ONNX
export of the whole recogniser (raw waveform in) agrees with NumPy, and decoding is causal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lbdl_graph.backends.numpy import run
from lbdl_graph.errors import ShapeError
from lbdl_graph.frontends import InputSpec, manual_seed, trace
from lbdl_graph.frontends.zoo import LogMel, Whisper, WhisperConfig, mel_filterbank

CFG = WhisperConfig(num_samples=400, d_model=16, d_ff=32, num_heads=2, encoder_layers=1,
                    decoder_layers=1)


def test_log_mel_matches_numpy_rfft() -> None:
    wave = np.random.default_rng(0).standard_normal((2, CFG.num_samples)).astype(np.float32)
    g = trace(LogMel(CFG), {"wave": InputSpec(("N", CFG.num_samples))}, training=False)
    got = run(g, {"wave": wave})["output"]
    n = np.arange(CFG.n_fft)
    win = 0.5 - 0.5 * np.cos(2 * np.pi * n / CFG.n_fft)
    frames = np.stack([wave[:, s:s + CFG.n_fft] for s in
                       range(0, CFG.num_samples - CFG.n_fft + 1, CFG.hop)], 1)
    power = np.abs(np.fft.rfft(frames * win, axis=-1)) ** 2
    want = np.log(power @ mel_filterbank(CFG.sample_rate, CFG.n_fft, CFG.n_mels) + 1e-6)
    assert got.shape == (2, CFG.num_frames, CFG.n_mels)
    np.testing.assert_allclose(got, want, atol=2e-3, rtol=1e-3)


def test_mel_filters_cover_the_spectrum() -> None:
    fb = mel_filterbank(2000, 64, 20)
    assert fb.shape == (33, 20) and (fb >= 0).all() and (fb.max(0) > 0.5).all()
    assert (fb.argmax(0)[1:] >= fb.argmax(0)[:-1]).all()  # centres rise with the bin index


def test_decoder_is_causal_and_exports(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from lbdl_graph.backends.onnx import OrtRunner, save_onnx

    manual_seed(0)
    g = trace(Whisper(CFG), {"wave": InputSpec(("N", CFG.num_samples)),
                             "tokens": InputSpec(("N", "S"), "int64")}, training=False)
    rng = np.random.default_rng(1)
    feeds = {"wave": rng.standard_normal((2, CFG.num_samples)).astype(np.float32),
             "tokens": rng.integers(0, CFG.vocab_size, (2, 5))}
    out = run(g, feeds)["output"]
    changed = dict(feeds, tokens=feeds["tokens"].copy())
    changed["tokens"][:, 4] = (changed["tokens"][:, 4] + 1) % CFG.vocab_size
    np.testing.assert_allclose(run(g, changed)["output"][:, :4], out[:, :4], atol=1e-6)
    ort = OrtRunner(save_onnx(g, tmp_path / "w.onnx", training=False)).run(feeds)["output"]
    np.testing.assert_allclose(ort, out, atol=1e-4)


def test_clip_shorter_than_a_frame_is_refused() -> None:
    with pytest.raises(ShapeError, match="num_samples >= n_fft"):
        LogMel(WhisperConfig(num_samples=10))
