"""A deployable generation bundle: a directory that ONNX Runtime generates from with no Python
model code.

``export_generation(model, DIR)`` writes ``prefill.onnx`` and ``decode.onnx`` (their weights
stored once, in ``weights.data``), ``tokenizer.json`` when a tokenizer is given, and
``generation_config.json`` (vocabulary, context, cached layers, precision, stop ids, default
sampling). ``load_generation(DIR)`` checks it and returns a runner, the tokenizer and the config.
``shared_cache=True`` exports the opt-in fast decode graph (a shared, in-place KV cache through
ONNX Runtime's GroupQueryAttention, CPU, float32 or weight-only quantised, unpadded batches);
the config's ``cache`` says which ("shared" or the default "concat").
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lbdl_graph.errors import GenerationError, LbdlError

from ..module import Module
from .graphs import GenerationGraphs, past_name, present_name, trace_generation
from .runners import KVRunner, ort_kv_runner
from .tokenizer import Tokenizer

__all__ = ["CONFIG", "Bundle", "export_generation", "load_generation", "prepare_graphs"]

CONFIG = "generation_config.json"
PREFILL, DECODE, TOKENIZER, WEIGHTS = "prefill.onnx", "decode.onnx", "tokenizer.json", \
    "weights.data"
PRECISIONS = ("float32", "float16", "bfloat16")
QUANTIZE = ("q8_0", "q4_0", "q4_1", "int8")


def prepare_graphs(graphs: GenerationGraphs, *, precision: str = "float32",
                   quantize: str | None = None) -> GenerationGraphs:
    """The graphs in ``precision`` (the cache too) and/or with weight-only ``quantize``d
    matmuls (a tied head gets its own quantised copy)."""
    if precision not in PRECISIONS:
        raise GenerationError(f"unknown precision {precision!r}; use one of {PRECISIONS}")
    if quantize is not None and quantize not in QUANTIZE:
        raise GenerationError(f"unknown quantisation {quantize!r}; use one of {QUANTIZE}")
    pre, dec = graphs.prefill, graphs.decode
    n = len(graphs.layers)
    presents = [present_name(i, k) for i in range(n) for k in ("key", "value")]
    pasts = [past_name(i, k) for i in range(n) for k in ("key", "value")]
    if precision != "float32":
        from lbdl_graph.passes.precision import convert_precision

        pre = convert_precision(pre, precision, narrow_io=presents).graph
        dec = convert_precision(dec, precision, narrow_io=presents + pasts).graph
    if quantize is not None:
        from lbdl_graph.passes.quant.weights import quantize_weights

        level = 4 if quantize != "int8" else 0  # int8 activations: ORT's fast CPU kernels
        pre = quantize_weights(pre, quantize, accuracy_level=level, untie=True).graph
        dec = quantize_weights(dec, quantize, accuracy_level=level, untie=True).graph
    return GenerationGraphs(pre, dec, graphs.layers, graphs.vocab_size, graphs.context,
                            graphs.shared)


def export_generation(model: Module | GenerationGraphs, directory: str | os.PathLike[str], *,
                      tokenizer: Tokenizer | None = None, precision: str = "float32",
                      quantize: str | None = None, opset: int = 21,
                      stop_ids: Sequence[int] | None = None,
                      defaults: Mapping[str, Any] | None = None,
                      shared_cache: bool = False) -> Path:
    """Write the bundle into ``directory`` (created); returns the config file's path.

    ``stop_ids`` default to the tokenizer's ``<|endoftext|>``; ``defaults`` are sampling
    options (temperature, top_k, top_p, repetition_penalty, max_new_tokens) ``generate``
    uses unless told otherwise; ``shared_cache`` traces a Module's decode graph over shared
    cache buffers (GenerationGraphs bring their own)."""
    from lbdl_graph.backends.onnx import save_onnx_models, to_onnx

    from ..cli.common import CliError, atomic_write, check_output

    graphs = model if isinstance(model, GenerationGraphs) else \
        trace_generation(model, shared_cache=shared_cache)
    if shared_cache and not graphs.shared:
        raise GenerationError("shared_cache=True needs graphs traced with shared_cache=True")
    if graphs.shared and precision != "float32":
        raise GenerationError(f"the shared KV cache exports in float32 (optionally with "
                              f"quantised weights), not {precision}")
    if tokenizer is not None and tokenizer.vocab_size > graphs.vocab_size:
        raise GenerationError(f"the tokenizer has {tokenizer.vocab_size} tokens, more than the "
                              f"model's vocabulary of {graphs.vocab_size}")
    ready = prepare_graphs(graphs, precision=precision, quantize=quantize)
    try:
        out = check_output(directory, mkdir=True)
    except CliError as e:
        raise GenerationError(str(e)) from None
    models = {PREFILL: to_onnx(ready.prefill, opset=opset, training=False),
              DECODE: to_onnx(ready.decode, opset=opset, training=False)}
    save_onnx_models(models, out, data=WEIGHTS)
    if tokenizer is not None:
        tokenizer.save(out / TOKENIZER)
    if stop_ids is None:
        eos = tokenizer.eos_id if tokenizer is not None else None
        stop_ids = [] if eos is None else [eos]
    config = {**graphs.config(), "precision": precision, "quantize": quantize,
              "files": {"prefill": PREFILL, "decode": DECODE,
                        "tokenizer": TOKENIZER if tokenizer is not None else None},
              "stop_ids": [int(s) for s in stop_ids], "pad_id": 0,
              "defaults": dict(defaults or {})}
    try:
        return atomic_write(out / CONFIG, json.dumps(config, indent=2) + "\n")
    except CliError as e:
        raise GenerationError(str(e)) from None


@dataclass
class Bundle:
    """A loaded bundle: the step runner, the tokenizer (or None) and the config."""

    runner: KVRunner
    tokenizer: Tokenizer | None
    config: dict[str, Any]
    directory: Path


def _read_config(d: Path) -> dict[str, Any]:
    p = d / CONFIG
    if not d.is_dir():
        raise GenerationError(f"{d} is not a generation bundle directory (no such directory)")
    if not p.is_file():
        raise GenerationError(f"{d} is not a generation bundle: {CONFIG} is missing",
                              hint="write one with `lbdl-graph export MODEL -o DIR "
                                   "--generation`")
    try:
        config = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GenerationError(f"{p} is not valid JSON: {e}") from None
    if not isinstance(config, dict) or config.get("format") != "lbdl-graph generation":
        raise GenerationError(f"{p} is not an lbdl-graph generation config")
    for key, kind in (("vocab_size", int), ("files", dict), ("stop_ids", list)):
        if not isinstance(config.get(key), kind):
            raise GenerationError(f"{p}: '{key}' is missing or not a {kind.__name__}")
    ctx = config.get("context")
    if ctx is not None and (not isinstance(ctx, int) or ctx < 1):
        raise GenerationError(f"{p}: 'context' must be a positive integer or null, got {ctx!r}")
    return config


def load_generation(directory: str | os.PathLike[str], *, threads: int | None = None,
                    providers: Any = None, io_binding: bool = True) -> Bundle:
    """Open a bundle on ONNX Runtime (CUDA when it works, else CPU, unless ``providers``)."""
    d = Path(directory)
    config = _read_config(d)
    files = config["files"]
    paths = {}
    for key in ("prefill", "decode", "tokenizer"):
        name = files.get(key)
        if key == "tokenizer" and name is None:
            continue
        if not isinstance(name, str) or "/" in name or "\\" in name or name.startswith("."):
            raise GenerationError(f"{d / CONFIG}: files.{key} must be a file name in the "
                                  f"bundle, got {name!r}")
        if not (d / name).is_file():
            raise GenerationError(f"{d}: {name} is missing from the bundle")
        paths[key] = d / name
    vocab, context = int(config["vocab_size"]), config.get("context")
    shared = config.get("cache") == "shared"
    try:
        runner = ort_kv_runner(paths["prefill"], paths["decode"], vocab, context,
                               threads=threads, providers=providers or ("cpu" if shared else None),
                               io_binding=io_binding, shared=shared)
    except LbdlError as e:
        raise GenerationError(f"{d}: cannot open the bundle's models: {e.message}") from None
    logits = next((o for o in runner.decode.session.get_outputs()  # type: ignore[attr-defined]
                   if o.name == "logits"), None)
    if logits is None or logits.shape[-1] != vocab:
        raise GenerationError(f"{d}: decode.onnx's logits {getattr(logits, 'shape', None)} do "
                              f"not end in the config's vocab_size {vocab}")
    tok = None
    if "tokenizer" in paths:
        tok = Tokenizer.load(paths["tokenizer"])
        if tok.vocab_size > vocab:
            raise GenerationError(f"{d}: the tokenizer has {tok.vocab_size} tokens, more than "
                                  f"the model's vocabulary of {vocab}")
    return Bundle(runner, tok, config, d)
