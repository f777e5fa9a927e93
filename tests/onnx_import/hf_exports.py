"""Small random-init Hugging Face models exported to ONNX with dynamic axes, both ways.

Used by the dynamic-shape import tests and ``benchmarks/import_real.py``. Needs torch and
transformers (and onnxscript for the dynamo exporter); callers skip when they are missing.
``export(family, exporter, path)`` writes the file and returns the feeds maker.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Feeds = Callable[[int, int], dict[str, np.ndarray]]
VOCAB = 99

__all__ = ["FAMILIES", "Feeds", "export", "seq_axis_dynamic"]


def _text_feeds(names: tuple[str, ...]) -> Feeds:
    def feeds(batch: int, seq: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(batch * 100 + seq)
        out = {"input_ids": rng.integers(1, VOCAB, (batch, seq)).astype(np.int64)}
        if "attention_mask" in names:
            mask = np.ones((batch, seq), np.int64)
            if seq > 2:
                mask[0, -1] = 0  # one padded position: the mask path is exercised
            out["attention_mask"] = mask
        if "decoder_input_ids" in names:
            out["decoder_input_ids"] = rng.integers(1, VOCAB, (batch, max(seq - 1, 1))).astype(
                np.int64)
        return out
    return feeds


def _models() -> dict[str, Callable[[], tuple[Any, tuple[str, ...]]]]:
    import transformers as tr

    txt = {"vocab_size": VOCAB, "bos_token_id": 1, "eos_token_id": 2}
    hid = {"hidden_size": 32, "num_attention_heads": 2, "num_hidden_layers": 2,
           "intermediate_size": 64, "max_position_embeddings": 64}
    ids_mask = ("input_ids", "attention_mask")
    return {
        "gpt2": lambda: (tr.GPT2Model(tr.GPT2Config(n_layer=2, n_head=2, n_embd=32,
                                                    n_positions=64, **txt)), ids_mask),
        "bert": lambda: (tr.BertModel(tr.BertConfig(**hid, **txt)), ids_mask),
        "roberta": lambda: (tr.RobertaModel(tr.RobertaConfig(**hid, **txt, pad_token_id=0)),
                            ids_mask),
        "distilbert": lambda: (tr.DistilBertModel(tr.DistilBertConfig(
            dim=32, n_heads=2, n_layers=2, hidden_dim=64, max_position_embeddings=64, **txt)),
            ids_mask),
        "albert": lambda: (tr.AlbertModel(tr.AlbertConfig(embedding_size=16, **hid, **txt)),
                           ids_mask),
        "t5_encoder": lambda: (tr.T5EncoderModel(tr.T5Config(
            d_model=32, d_kv=32, d_ff=64, num_layers=2, num_heads=1, **txt)), ids_mask),
        "t5": lambda: (tr.T5Model(tr.T5Config(d_model=32, d_kv=32, d_ff=64, num_layers=2,
                                              num_heads=1, **txt)),
                       ("input_ids", "attention_mask", "decoder_input_ids")),
        "llama": lambda: (tr.LlamaModel(tr.LlamaConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, max_position_embeddings=64, **txt)), ids_mask),
        "opt": lambda: (tr.OPTModel(tr.OPTConfig(
            hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=2,
            word_embed_proj_dim=32, max_position_embeddings=64, **txt)), ids_mask),
        "gpt_neo": lambda: (tr.GPTNeoModel(tr.GPTNeoConfig(
            hidden_size=32, num_layers=2, num_heads=2, attention_types=[[["global", "local"], 1]],
            window_size=4, max_position_embeddings=64, intermediate_size=64, **txt)), ids_mask),
        "vit": lambda: (tr.ViTModel(tr.ViTConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            image_size=16, patch_size=4, num_channels=3)), ("pixel_values",)),
        "whisper_encoder": lambda: (tr.WhisperModel(tr.WhisperConfig(
            d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
            num_mel_bins=8, max_source_positions=16, max_target_positions=16,
            vocab_size=VOCAB, pad_token_id=0, bos_token_id=1, eos_token_id=2,
            decoder_start_token_id=1)).get_encoder(), ("input_features",)),
    }


FAMILIES = (
    "gpt2", "bert", "roberta", "distilbert", "albert", "t5_encoder", "t5", "llama", "opt",
    "gpt_neo", "vit", "whisper_encoder")


def seq_axis_dynamic(family: str) -> bool:
    """False for the families whose second axis is fixed by the model (images, mel frames)."""
    return family not in ("vit", "whisper_encoder")


class _Wrap:
    """A module returning the last hidden state only (one output)."""

    @staticmethod
    def make(model: Any, names: tuple[str, ...]) -> Any:
        import torch

        class W(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.m = model

            def forward(self, *args: Any) -> Any:
                kw = dict(zip(names, args, strict=True))
                if "use_cache" in self.m.forward.__code__.co_varnames:
                    kw["use_cache"] = False
                return self.m(**kw).last_hidden_state

        return W().eval()


def _image_feeds(shape: tuple[int, ...]) -> Feeds:
    def feeds(batch: int, seq: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(batch)
        name = "pixel_values" if len(shape) == 3 else "input_features"
        return {name: rng.normal(size=(batch, *shape)).astype(np.float32)}
    return feeds


def export(family: str, exporter: str, path: Path) -> Feeds:
    """Export ``family`` with dynamic batch (and sequence) axes; ``exporter`` is "legacy"
    (TorchScript, opset 17, dynamic_axes) or "dynamo" (opset 18, dynamic_shapes)."""
    import torch

    torch.manual_seed(0)
    model, names = _models()[family]()
    wrapped = _Wrap.make(model.eval(), names)
    if family == "vit":
        feeds = _image_feeds((3, 16, 16))
    elif family == "whisper_encoder":
        feeds = _image_feeds((8, 32))
    else:
        feeds = _text_feeds(names)
    example = feeds(2, 5)
    args = tuple(torch.from_numpy(example[k]) for k in names)
    dyn_seq = seq_axis_dynamic(family)
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            if exporter == "legacy":
                axes = {k: ({0: "batch", 1: "seq"} if dyn_seq else {0: "batch"}) for k in names}
                if "decoder_input_ids" in names:
                    axes["decoder_input_ids"] = {0: "batch", 1: "dec_seq"}
                torch.onnx.export(wrapped, args, str(path), input_names=list(names),
                                  output_names=["last_hidden_state"], dynamic_axes=axes,
                                  opset_version=17, dynamo=False)
            else:
                b = torch.export.Dim("batch", min=1, max=16)
                s = torch.export.Dim("seq", min=2, max=32)
                shapes: list[dict[int, Any]] = [{0: b, 1: s} if dyn_seq else {0: b}
                                                for _ in names]
                if "decoder_input_ids" in names:
                    shapes[-1] = {0: b, 1: torch.export.Dim("dec_seq", min=2, max=32)}
                torch.onnx.export(wrapped, args, str(path), input_names=list(names),
                                  output_names=["last_hidden_state"],
                                  dynamic_shapes=(tuple(shapes),), opset_version=18,
                                  dynamo=True)
    finally:
        logging.disable(logging.NOTSET)
    return feeds


SIZES = ((1, 3), (2, 5), (3, 9))


def check_dynamic(path: Path, feeds: Feeds, sizes: tuple[tuple[int, int], ...] = SIZES,
                  *, seq_dynamic: bool = True) -> float:
    """Import ``path``, run it on NumPy and (re-exported) on ORT at every (batch, seq) size,
    and return the largest difference from ORT on the original file. Asserts that the
    re-exported model keeps the axes symbolic."""
    import onnxruntime as ort

    from lbdl_graph.backends.numpy import run
    from lbdl_graph.backends.onnx import run_onnxruntime, to_onnx
    from lbdl_graph.frontends.onnx import import_onnx

    graph = import_onnx(path)
    model = to_onnx(graph, training=False)
    for vi in model.graph.input:
        dims = vi.type.tensor_type.shape.dim
        assert dims[0].dim_param, f"{path.name}: re-exported input {vi.name} has a static batch"
        if seq_dynamic and len(dims) == 2:
            assert dims[1].dim_param, f"{path.name}: re-exported input {vi.name}: static seq"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch, seq in sizes:
        f = feeds(batch, seq)
        (want,) = sess.run(None, f)
        (got,) = run(graph, f, training=False).values()
        (ort_got,) = run_onnxruntime(model, f).values()
        assert got.shape == want.shape and ort_got.shape == want.shape, (got.shape, want.shape)
        worst = max(worst, float(np.abs(got - want).max()), float(np.abs(ort_got - want).max()))
    return worst
