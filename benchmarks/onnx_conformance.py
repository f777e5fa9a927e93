"""ONNX backend node-test conformance of the ONNX importer + NumPy interpreter.

Runs every test of the ONNX backend node suite (``onnx/backend/test/data/node/<test>/model.onnx``
with ``test_data_set_*/{input,output}_*.pb``) through ``import_onnx`` and the NumPy interpreter
and compares the outputs as the ONNX backend runner does (same shape and dtype, then
``assert_allclose`` with the suite's rtol 1e-3 / atol 1e-7; bfloat16 gets two ULPs).

Each test is classified:
* passed: imported as is and every output matches;
* passed (specialised): a shape-like operand (Reshape's shape, Slice's starts, ...) is a graph
  input in the test; it was frozen to the data set's value with ``constant_inputs`` and the
  remaining graph (still fed by real inputs) matches;
* failed: the importer or a kernel raised, or an output differs (first line of the error);
* excluded, with a reason: an op outside our op set, a feature we lack (sequence/optional types,
  dynamic shapes, unsupported dtypes, training-mode ops...).

The wheels of onnx do not ship the node data; when it is missing the script writes it once from
``onnx.backend.test.case.node`` (as ``backend-test-tools generate-data`` does) into
``~/.cache/lbdl-graph/onnx-node-tests-<onnx version>``.

Usage: python benchmarks/onnx_conformance.py [--json] [--verbose] [-k REGEX] [--data-dir D]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from lbdl_graph.backends.numpy import run
from lbdl_graph.errors import LbdlError
from lbdl_graph.frontends.onnx import OnnxUnsupportedError, import_onnx

RTOL, ATOL = 1e-3, 1e-7
HUGE_ELEMENTS = 20_000_000  # tests with more input/output elements than this are skipped


@dataclass
class Result:
    """The outcome of one node test."""

    name: str
    status: str  # passed | specialised | failed | excluded
    detail: str = ""
    frozen: list[str] = field(default_factory=list)
    seconds: float = 0.0


# ---------------------------------------------------------------- test data


def _write_proto(path: Path, value: Any, name: str, type_proto: onnx.TypeProto) -> None:
    if type_proto.HasField("sequence_type"):
        proto = numpy_helper.from_list(value, name)
    elif type_proto.HasField("optional_type"):
        proto = numpy_helper.from_optional(value, name)
    elif type_proto.HasField("map_type"):
        proto = numpy_helper.from_dict(value, name)
    elif isinstance(value, onnx.TensorProto):
        proto = value
    else:
        proto = numpy_helper.from_array(value, name)
    path.write_bytes(proto.SerializeToString())


def generate_node_data(out: Path, names: set[str] | None = None) -> None:
    """Write the node test suite (or the tests in ``names``) from onnx.backend.test.case.node
    into ``out``."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    out.mkdir(parents=True, exist_ok=True)
    for case in cases:
        if names is not None and case.name not in names:
            continue
        d = out / case.name
        (d / "test_data_set_0").mkdir(parents=True, exist_ok=True)
        assert case.model is not None and case.data_sets is not None
        (d / "model.onnx").write_bytes(case.model.SerializeToString())
        for k, (inputs, outputs) in enumerate(case.data_sets):
            ds = d / f"test_data_set_{k}"
            ds.mkdir(exist_ok=True)
            for j, v in enumerate(inputs):
                vi = case.model.graph.input[j]
                _write_proto(ds / f"input_{j}.pb", v, vi.name, vi.type)
            for j, v in enumerate(outputs):
                vi = case.model.graph.output[j]
                _write_proto(ds / f"output_{j}.pb", v, vi.name, vi.type)
    if names is None:
        (out / ".complete").write_text(onnx.__version__)


def existing_node_data() -> Path | None:
    """The node test directory shipped with onnx or already generated into the cache."""
    shipped = Path(onnx.__file__).parent / "backend" / "test" / "data" / "node"
    if shipped.is_dir() and any(shipped.iterdir()):
        return shipped
    out = _cache_dir()
    return out if (out / ".complete").exists() else None


def _cache_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "lbdl-graph" / f"onnx-node-tests-{onnx.__version__}"


def node_data_dir(data_dir: str | None = None) -> Path:
    """The node test directory: given, shipped with onnx, or generated into the cache."""
    if data_dir:
        return Path(data_dir)
    found = existing_node_data()
    if found is None:
        found = _cache_dir()
        generate_node_data(found)
    return found


def _load_value(path: Path, type_proto: onnx.TypeProto) -> Any:
    data = path.read_bytes()
    if type_proto.HasField("sequence_type"):
        seq = onnx.SequenceProto()
        seq.ParseFromString(data)
        return numpy_helper.to_list(seq)
    if type_proto.HasField("optional_type"):
        opt = onnx.OptionalProto()
        opt.ParseFromString(data)
        return numpy_helper.to_optional(opt)
    t = onnx.TensorProto()
    t.ParseFromString(data)
    return numpy_helper.to_array(t)


def load_data_sets(test_dir: Path, model: onnx.ModelProto) -> list[tuple[list[Any], list[Any]]]:
    """The (inputs, expected outputs) of every test_data_set_* of a test."""
    sets = []
    for ds in sorted(test_dir.glob("test_data_set_*")):
        ins = [_load_value(ds / f"input_{i}.pb", model.graph.input[i].type)
               for i in range(len(list(ds.glob("input_*.pb"))))]
        outs = [_load_value(ds / f"output_{i}.pb", model.graph.output[i].type)
                for i in range(len(list(ds.glob("output_*.pb"))))]
        sets.append((ins, outs))
    return sets


# ---------------------------------------------------------------- running one test


def compare(expected: np.ndarray, actual: np.ndarray, what: str) -> str | None:
    """None if ``actual`` matches as the ONNX backend runner requires, else a message."""
    actual = np.asarray(actual)
    if tuple(actual.shape) != tuple(expected.shape):
        return f"{what}: shape {list(actual.shape)}, expected {list(expected.shape)}"
    if actual.dtype != expected.dtype:
        return f"{what}: dtype {actual.dtype}, expected {expected.dtype}"
    rtol = RTOL
    if expected.dtype.name == "bfloat16" or expected.dtype.kind == "V":
        rtol = max(rtol, 2**-6) if expected.dtype.name == "bfloat16" else rtol
        expected, actual = expected.astype(np.float32), actual.astype(np.float32)
    try:
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=ATOL)
    except AssertionError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        info = "; ".join(ln for ln in lines if ln.startswith(("Mismatched", "Max abs")))
        return f"{what}: values differ ({info or lines[0]})"
    return None


def _reason(e: OnnxUnsupportedError) -> str:
    if e.ops:
        return "unsupported op " + ", ".join(sorted(e.ops))
    msg = e.features[0][2] if e.features else e.message
    m = re.search(r"unsupported element type (\w+)", msg)
    if m:
        return f"unsupported dtype {m.group(1)}"
    msg = re.sub(r"'[^']*'", "", msg.splitlines()[0])
    msg = re.sub(r"[a-z0-9]+\[[^\]]*\]", "", msg)  # types such as f32[2,3]
    return re.sub(r"\s+", " ", msg).replace(" :", ":").strip(" :,")


def _non_tensor(model: onnx.ModelProto) -> bool:
    return any(not vi.type.HasField("tensor_type")
               for vi in [*model.graph.input, *model.graph.output])


def run_test(test_dir: Path) -> Result:
    """Import, run and compare one node test."""
    name = test_dir.name
    t0 = time.perf_counter()
    try:
        model = onnx.load(str(test_dir / "model.onnx"), load_external_data=False)
        if _non_tensor(model):
            return Result(name, "excluded", "sequence/optional types")
        sets = load_data_sets(test_dir, model)
        size = sum(np.asarray(a).size for ins, outs in sets for a in [*ins, *outs])
        if size > HUGE_ELEMENTS:
            return Result(name, "excluded", f"huge test ({size} elements)")
        res = _run_sets(name, test_dir, model, sets)
    except Exception as e:  # a crash is a failure of ours, reported with its first line
        first = str(e).splitlines()[0] if str(e) else ""
        res = Result(name, "failed", f"{type(e).__name__}: {first}")
    res.seconds = time.perf_counter() - t0
    return res


def _run_sets(name: str, test_dir: Path, model: onnx.ModelProto,
              sets: list[tuple[list[Any], list[Any]]]) -> Result:
    in_names = [vi.name for vi in model.graph.input]
    out_names = [vi.name for vi in model.graph.output]
    frozen: list[str] = []
    try:
        graph = import_onnx(test_dir / "model.onnx")
    except OnnxUnsupportedError as e:
        if e.ops or not e.needs_constant or not set(e.needs_constant) <= set(in_names):
            return Result(name, "excluded", _reason(e))
        frozen = list(e.needs_constant)
        graph = None
    status = "specialised" if frozen else "passed"
    for inputs, expected in sets:
        feeds = dict(zip(in_names, inputs, strict=False))
        while frozen:  # freeze what the importer asks for until it is satisfied
            try:
                graph = import_onnx(test_dir / "model.onnx",
                                    constant_inputs={k: feeds[k] for k in frozen})
                break
            except OnnxUnsupportedError as e:
                more = set(e.needs_constant) - set(frozen)
                if e.ops or not more or not more <= set(in_names):
                    return Result(name, "excluded", _reason(e))
                frozen = sorted(set(frozen) | more)
        if frozen:
            feeds = {k: v for k, v in feeds.items() if k not in frozen}
            if not graph.inputs or not graph.nodes or all(
                    n.op.name == "constant" for n in graph.nodes):
                return Result(name, "excluded", "all inputs must be import-time constants "
                              f"({', '.join(frozen)})")
        assert graph is not None
        live = {v.name for v in graph.inputs}
        try:
            outs = run(graph, {k: v for k, v in feeds.items() if k in live}, training=False)
        except LbdlError as e:
            return Result(name, "failed", f"{type(e).__name__}: {e.message.splitlines()[0]}",
                          frozen)
        for i, oname in enumerate(out_names):
            msg = compare(np.asarray(expected[i]), outs[oname], f"output {i} '{oname}'")
            if msg:
                return Result(name, "failed", msg, frozen)
    return Result(name, status, "", frozen)


# ---------------------------------------------------------------- the suite


def run_suite(data_dir: Path, pattern: str | None = None) -> list[Result]:
    """Run every test directory under ``data_dir`` (those whose name contains ``pattern``)."""
    dirs = sorted(d for d in data_dir.iterdir() if (d / "model.onnx").exists())
    if pattern:
        dirs = [d for d in dirs if re.search(pattern, d.name)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            return [run_test(d) for d in dirs]


def summary(results: list[Result]) -> dict[str, Any]:
    """Counts, pass rate and the reasons of exclusions."""
    c = Counter(r.status for r in results)
    attempted = c["passed"] + c["specialised"] + c["failed"]
    passed = c["passed"] + c["specialised"]
    return {
        "total": len(results), "attempted": attempted, "passed": passed,
        "passed_as_is": c["passed"], "passed_specialised": c["specialised"],
        "failed": c["failed"], "excluded": c["excluded"],
        "pass_rate": round(passed / attempted, 4) if attempted else 0.0,
        "excluded_reasons": dict(Counter(r.detail for r in results
                                         if r.status == "excluded").most_common()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print a JSON report")
    ap.add_argument("--verbose", action="store_true", help="list every test and exclusion")
    ap.add_argument("-k", dest="pattern", help="only tests whose name matches this regex")
    ap.add_argument("--data-dir", help="the onnx/backend/test/data/node directory to use")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    results = run_suite(node_data_dir(args.data_dir), args.pattern)
    s = summary(results)
    s["seconds"] = round(time.perf_counter() - t0, 1)
    failures = {r.name: r.detail for r in results if r.status == "failed"}
    if args.json:
        s["failures"] = failures
        s["tests"] = {r.name: {"status": r.status, "detail": r.detail, "frozen": r.frozen}
                      for r in results}
        print(json.dumps(s, indent=1))
        return 0
    if args.verbose:
        for r in results:
            extra = f" (frozen: {', '.join(r.frozen)})" if r.frozen else ""
            print(f"{r.status:12} {r.name}{extra}  {r.detail}")
        print()
        print("Exclusion reasons:")
        for reason, count in s["excluded_reasons"].items():
            print(f"  {count:5}  {reason}")
        print()
    if failures:
        print(f"Failures ({len(failures)}):")
        for name, detail in failures.items():
            print(f"  {name}: {detail}")
        print()
    print(f"passed {s['passed']} / attempted {s['attempted']} / total {s['total']}  "
          f"(pass rate {100 * s['pass_rate']:.1f}%; {s['passed_as_is']} as is, "
          f"{s['passed_specialised']} with shape operands frozen; {s['excluded']} excluded) "
          f"in {s['seconds']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
