"""Fuzz the ONNX importer: mutate exported zoo models' bytes and structure for a fixed budget.

Each case mutates one exported model (a byte flip, truncation or insertion; or a structural
change: an attribute of another kind, a corrupt element type, a huge or negative dim, a bad
opset or IR version, bad external data, a sparse initializer, a shape-op bomb), imports it and,
if that succeeds, runs it once on the NumPy interpreter. Every case runs in a pool worker under
a SIGALRM time limit and the parent's own deadline, so a hang is counted, not waited on. The
report counts outcomes: ``ok`` (accepted), ``typed`` (an LbdlError), ``untyped`` (any other
exception; first few listed with the case seed), ``hang`` and ``crash`` (the worker died).

    python benchmarks/fuzz_onnx.py --cases 2000 --seconds 300 --json fuzz.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import signal
import sys
import time
import traceback
from typing import Any

MODELS = ("mlp_tiny", "lenet_digits", "gpt_tiny", "resnet_tiny")
_MODELS: list[bytes] = []


class _Alarm(Exception):
    pass


def export_models(names: tuple[str, ...]) -> list[bytes]:
    """Serialised ONNX exports of the zoo entries (inference graphs, opset 21)."""
    from lbdl_graph.backends.onnx import to_onnx
    from lbdl_graph.frontends import manual_seed
    from lbdl_graph.frontends.zoo import ZOO

    out = []
    for name in names:
        manual_seed(0)
        out.append(to_onnx(ZOO[name].trace(), opset=21, training=False).SerializeToString())
    return out


def _byte_mutation(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    kind = rng.choice(("flip", "truncate", "insert", "splice"))
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif kind == "truncate":
        del b[rng.randrange(len(b)):]
    elif kind == "insert":
        i = rng.randrange(len(b))
        b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    else:
        i, j = sorted(rng.randrange(len(b)) for _ in range(2))
        b[i:j] = b[j:i:-1]
    return bytes(b)


def _weird_attr_value(rng: random.Random) -> Any:
    return rng.choice([2.5, float("nan"), float("inf"), -1, 0, 2 ** 31, 2 ** 62, [1, 2],
                       [0.5, float("nan")], "abc", b"\xff", [], [-(2 ** 40)]])


def _structure_mutation(data: bytes, rng: random.Random) -> bytes:
    import onnx
    from onnx import TensorProto, helper

    m = onnx.ModelProto()
    m.ParseFromString(data)
    g = m.graph
    kind = rng.choice(("attr_kind", "attr_value", "init_type", "init_dims", "input_dims",
                       "input_type", "opset", "ir", "external", "sparse", "bomb", "drop_input",
                       "op_swap", "no_value"))
    nodes = [n for n in g.node if n.attribute] or list(g.node)
    node = rng.choice(list(g.node))
    if kind in ("attr_kind", "attr_value", "no_value") and nodes:
        node = rng.choice(nodes)
        if node.attribute:
            a = rng.choice(list(node.attribute))
            name = a.name
            node.attribute.remove(a)
            if kind == "no_value":
                node.attribute.add().name = name
            else:
                value = _weird_attr_value(rng)
                kind_of = onnx.AttributeProto.INTS if value == [] else None
                node.attribute.append(helper.make_attribute(name, value, attr_type=kind_of))
    elif kind in ("init_type", "init_dims") and g.initializer:
        t = rng.choice(list(g.initializer))
        if kind == "init_type":
            t.data_type = rng.choice([0, 8, 14, 15, 30, 34, 40, 99, rng.randrange(1, 25)])
        elif t.dims:
            t.dims[rng.randrange(len(t.dims))] = rng.choice([-1, 0, 2 ** 40, 2 ** 31])
    elif kind in ("input_dims", "input_type") and g.input:
        vi = rng.choice(list(g.input))
        tt = vi.type.tensor_type
        if kind == "input_type":
            tt.elem_type = rng.choice([0, 8, 34, 99, rng.randrange(1, 25)])
        elif tt.shape.dim:
            tt.shape.dim[rng.randrange(len(tt.shape.dim))].dim_value = rng.choice(
                [-3, 0, 2 ** 40])
    elif kind == "opset":
        m.opset_import[0].version = rng.choice([0, 1, 7, 12, 27, 28, 29, 99, -5])
    elif kind == "ir":
        m.ir_version = rng.choice([0, 1, 2, 15, 99, -1])
    elif kind == "external" and g.initializer:
        t = rng.choice(list(g.initializer))
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", rng.choice(["w.bin", "../x", "/dev/zero", ""])),
                     ("offset", rng.choice(["0", "abc", "-4", "1.5"])),
                     ("length", rng.choice(["16", str(2 ** 40), "x", "-1"]))):
            e = t.external_data.add()
            e.key, e.value = k, v
    elif kind == "sparse":
        vals = helper.make_tensor("sv", TensorProto.FLOAT, [1], [1.0])
        idx = helper.make_tensor("si", TensorProto.INT64, [1], [0])
        g.sparse_initializer.append(helper.make_sparse_tensor(vals, idx, [4]))
    elif kind == "bomb":
        op = rng.choice(["ConstantOfShape", "Range", "Tile", "Expand"])
        big = rng.choice([10 ** 6, 2 ** 31, -2])
        c = helper.make_tensor(f"bomb_c{rng.randrange(10 ** 6)}", TensorProto.INT64, [2],
                               [big, big])
        g.initializer.append(c)
        first = g.input[0].name if g.input else c.name
        ins = {"ConstantOfShape": [c.name], "Tile": [first, c.name],
               "Expand": [first, c.name], "Range": [c.name, c.name, c.name]}[op]
        g.node.append(helper.make_node(op, ins, ["bomb_out"], name="bomb"))
        g.output.append(helper.make_empty_tensor_value_info("bomb_out"))
    elif kind == "drop_input" and node.input:
        del node.input[rng.randrange(len(node.input))]
    elif kind == "op_swap":
        node.op_type = rng.choice(["MaxPool", "Conv", "Reshape", "Gather", "Resize", "Slice",
                                   "Cast", "Transpose", "Gemm", "Softmax", "Pad", "Split"])
    return bytes(m.SerializeToString())


def _init(models: list[bytes]) -> None:
    os.environ.setdefault("LBDL_MAX_ALLOC_BYTES", str(256 << 20))
    _MODELS[:] = models


def run_case(seed: int, seconds: float) -> tuple[str, str]:
    """Mutate and import one model; returns (outcome, detail)."""
    import numpy as np

    from lbdl_graph.errors import LbdlError

    rng = random.Random(seed)
    data = _MODELS[rng.randrange(len(_MODELS))]
    data = (_byte_mutation if rng.random() < 0.5 else _structure_mutation)(data, rng)

    def alarm(*_: Any) -> None:
        raise _Alarm()

    signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        from lbdl_graph.backends.numpy.interpreter import Interpreter
        from lbdl_graph.frontends.onnx import import_onnx

        g = import_onnx(data)
        feeds = {v.name: np.zeros([d if isinstance(d, int) else 1 for d in v.shape],
                                  v.dtype.numpy) for v in g.inputs}
        Interpreter(g, training=False).run(feeds)
        return "ok", ""
    except _Alarm:
        return "hang", f"seed {seed}"
    except LbdlError:
        return "typed", ""
    except Exception as e:
        tb = traceback.extract_tb(e.__traceback__)[-1]
        where = f"{os.path.basename(tb.filename)}:{tb.lineno}"
        return "untyped", f"seed {seed}: {type(e).__name__} at {where}: {str(e)[:120]}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def fuzz(cases: int, seconds: float, per_case: float, workers: int, seed: int) -> dict[str, Any]:
    """Run up to ``cases`` cases (or until ``seconds`` pass); returns the counts."""
    models = export_models(MODELS)
    counts = {"ok": 0, "typed": 0, "untyped": 0, "hang": 0, "crash": 0}
    untyped: list[str] = []
    t0 = time.perf_counter()
    ctx = mp.get_context("fork")
    pool = ctx.Pool(workers, initializer=_init, initargs=(models,), maxtasksperchild=200)
    done = 0
    try:
        pending = [pool.apply_async(run_case, (seed * 1_000_003 + i, per_case))
                   for i in range(cases)]
        for i, res in enumerate(pending):
            if time.perf_counter() - t0 > seconds:
                break
            try:
                outcome, detail = res.get(timeout=per_case * 4 + 30)
            except mp.TimeoutError:
                outcome, detail = "hang", f"seed {seed * 1_000_003 + i} (worker stuck)"
            except Exception as e:  # the worker died
                outcome, detail = "crash", f"seed {seed * 1_000_003 + i}: {e}"
            counts[outcome] += 1
            done += 1
            if outcome in ("untyped", "hang", "crash") and len(untyped) < 30:
                untyped.append(f"{outcome}: {detail}")
    finally:
        pool.terminate()
    return {"cases": done, "seconds": round(time.perf_counter() - t0, 1), "workers": workers,
            "per_case_limit_s": per_case, "models": list(MODELS), "seed": seed,
            "counts": counts, "problems": untyped}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=300, help="overall budget")
    p.add_argument("--per-case", type=float, default=10, help="time limit of one case")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    args = p.parse_args(argv)
    report = fuzz(args.cases, args.seconds, args.per_case, args.workers, args.seed)
    c = report["counts"]
    print(f"{report['cases']} cases in {report['seconds']} s ({args.workers} workers): "
          f"{c['ok']} accepted, {c['typed']} typed errors, {c['untyped']} untyped, "
          f"{c['hang']} hangs, {c['crash']} crashes")
    for line in report["problems"]:
        print("  " + line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0 if c["untyped"] == c["hang"] == c["crash"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
