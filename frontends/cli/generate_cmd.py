"""``lbdl-graph generate MODEL --prompt TEXT``: generate text with a KV cache, streamed.

MODEL is a zoo causal LM (``gpt_mini``, ``gpt2_small``; random weights unless ``--checkpoint``)
traced into its prefill/decode graphs, or a bundle written by ``lbdl-graph export MODEL -o DIR
--generation`` (``--onnx DIR``, or DIR as MODEL), which runs on ONNX Runtime with no Python
model code. Text is encoded with the bundle's ``tokenizer.json``, ``--tokenizer FILE``, or else
as UTF-8 bytes (ids the tokenizer cannot show print as ``[id]``). Tokens are printed as they
come; a last line on stderr gives the prefill time and the decode speed in tokens/s.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from . import UsageError
from .common import CliError, resolve_zoo

__all__ = ["register"]


def _model_runner(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any]]:
    """(runner, tokenizer or None, bundle config) for the MODEL / --onnx arguments."""
    from lbdl_graph.frontends.generation import as_runner
    from lbdl_graph.frontends.generation.bundle import CONFIG, load_generation

    bundle = args.onnx
    if bundle is None and args.model is not None and (Path(args.model) / CONFIG).is_file():
        bundle = args.model
    if bundle is not None:
        b = load_generation(bundle, threads=args.threads)
        return b.runner, b.tokenizer, b.config
    if args.model is None:
        raise UsageError("give a MODEL (a zoo language model) or --onnx DIR (a bundle)")
    from lbdl_graph.frontends import manual_seed

    entry = resolve_zoo(args.model, args.config)
    manual_seed(args.seed)
    model = entry.model()
    if args.checkpoint is not None:
        from lbdl_graph.frontends.training.checkpoint import load_checkpoint

        state, _ = load_checkpoint(args.checkpoint)
        model.load_state_dict(state)
    return as_runner(model, backend=args.backend, threads=args.threads), None, {}


def _tokenizer(args: argparse.Namespace, found: Any, vocab: int) -> Any:
    from lbdl_graph.frontends.generation.tokenizer import Tokenizer

    if args.tokenizer is not None:
        return Tokenizer.load(args.tokenizer)
    if found is not None:
        return found
    if vocab < 257:
        if args.prompt_ids is not None:
            return None  # ids in, ids out
        raise CliError(f"the model's vocabulary has {vocab} ids, too few for UTF-8 bytes; "
                       "pass --tokenizer FILE or --prompt-ids")
    return Tokenizer.bytes_only()


def _prompt_ids(args: argparse.Namespace, tok: Any) -> list[int]:
    if args.prompt_ids is not None:
        try:
            ids = [int(t) for t in args.prompt_ids.replace(",", " ").split()]
        except ValueError:
            raise UsageError(f"--prompt-ids expects integers, got {args.prompt_ids!r}") from None
        if not ids:
            raise UsageError("--prompt-ids is empty")
        return ids
    if args.prompt is None:
        raise UsageError("give --prompt TEXT or --prompt-ids IDS")
    ids = tok.encode(args.prompt)
    if not ids:
        raise UsageError("--prompt encodes to no tokens; give some text")
    return ids


class _Printer:
    """Streams tokens as text; stop ids are not shown, ids outside the tokenizer print as
    ``[id]``."""

    def __init__(self, tok: Any, stops: set[int]) -> None:
        self.tok, self.stops = tok, stops
        self.stream = tok.stream() if tok is not None else None
        self.size = tok.vocab_size if tok is not None else 0

    def text(self, t: int) -> str:
        if self.stream is None or t >= self.size:
            return (self.stream.flush() if self.stream is not None else "") + f"[{t}]"
        return str(self.stream.push(t))

    def __call__(self, step: int, tokens: Any, done: Any) -> None:
        t = int(tokens[0])
        if t not in self.stops:
            sys.stdout.write(self.text(t))
            sys.stdout.flush()

    def close(self) -> None:
        sys.stdout.write((self.stream.flush() if self.stream is not None else "") + "\n")
        sys.stdout.flush()


def _run(args: argparse.Namespace) -> int:
    from lbdl_graph.frontends.generation import generate

    runner, found, config = _model_runner(args)
    tok = _tokenizer(args, found, runner.vocab_size)
    ids = _prompt_ids(args, tok)
    defaults = config.get("defaults", {}) if isinstance(config.get("defaults"), dict) else {}

    def pick(name: str, fallback: Any) -> Any:
        v = getattr(args, name)
        return v if v is not None else defaults.get(name, fallback)

    stops = config.get("stop_ids", [])
    if args.stop_id:
        stops = list(args.stop_id)
    printer = _Printer(tok, set(stops))
    if args.echo:
        sys.stdout.write("".join(printer.text(i) for i in ids))
    out = generate(runner, ids, pick("max_new_tokens", 64), temperature=pick("temperature", 0.8),
                   top_k=pick("top_k", None), top_p=pick("top_p", None),
                   repetition_penalty=pick("repetition_penalty", 1.0), stop_ids=stops,
                   seed=args.seed, on_token=printer)
    printer.close()
    n = len(out.tokens[0])
    speed = (f", decode {out.decode_tokens_per_s:.1f} tokens/s" if out.step_s else "")
    print(f"{n} tokens ({out.stop_reasons[0]}); prefill {out.prefill_s * 1000:.1f} ms for "
          f"{len(ids)} prompt tokens{speed}", file=sys.stderr)
    if out.message:
        print(f"note: {out.message}", file=sys.stderr)
    return 0


def register(sub: Any) -> None:
    """Add the ``generate`` verb."""
    p = sub.add_parser("generate", help="generate text with a KV cache (zoo model or bundle)",
                       description="Continue a prompt with a causal language model: a zoo "
                                   "model traced with a KV cache, or an exported generation "
                                   "bundle on ONNX Runtime.")
    p.add_argument("model", nargs="?", metavar="MODEL",
                   help="zoo language model (gpt_mini, gpt2_small) or a bundle directory")
    p.add_argument("--onnx", metavar="DIR", help="a bundle from `export --generation`")
    p.add_argument("--prompt", metavar="TEXT", help="the text to continue")
    p.add_argument("--prompt-ids", metavar="IDS", help="token ids instead of --prompt (1,2,3)")
    p.add_argument("--max-new-tokens", type=int, default=None, metavar="N",
                   help="tokens to generate (default: the bundle's, else 64)")
    p.add_argument("--temperature", type=float, default=None, metavar="T",
                   help="0 is greedy (default: the bundle's, else 0.8)")
    p.add_argument("--top-k", type=int, default=None, metavar="K")
    p.add_argument("--top-p", type=float, default=None, metavar="P")
    p.add_argument("--repetition-penalty", type=float, default=None, metavar="R")
    p.add_argument("--stop-id", type=int, action="append", metavar="ID",
                   help="a token id that ends generation (repeatable; default: the bundle's)")
    p.add_argument("--seed", type=int, default=0, help="sampling (and initialisation) seed")
    p.add_argument("--tokenizer", metavar="FILE", help="a tokenizer.json (HF format)")
    p.add_argument("--checkpoint", metavar="FILE", help="weights for the zoo model")
    p.add_argument("--config", choices=("tiny", "default"), default=None,
                   help="the zoo family's tiny or default configuration")
    p.add_argument("--backend", choices=("onnxruntime", "numpy"), default="onnxruntime",
                   help="for a zoo model (default onnxruntime)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="ONNX Runtime intra-op threads")
    p.add_argument("--echo", action="store_true", help="print the prompt first")
    p.set_defaults(func=_run)
