"""Node-data overlays: sizes, MACs, bytes, memory kept for backward, measured time, pass diff."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from lbdl_graph.frontends import InputSpec, zoo
from lbdl_graph.frontends.inspect import graph_diff, node_macs
from lbdl_graph.frontends.inspect.common import type_bytes
from lbdl_graph.frontends.inspect.explorer_data import (
    DIFF_COLORS,
    bytes_values,
    diff_data,
    diff_results,
    mac_values,
    node_data,
    numpy_time_values,
    ort_time_values,
    param_values,
    saved_for_backward,
)
from lbdl_graph.frontends.inspect.explorer_graph import input_id, param_id
from lbdl_graph.frontends.inspect.explorer_stages import build_bundle, build_stages
from lbdl_graph.frontends.inspect.scopes import scope_tree

from .models import attention_block, lenet


def _step(name: str = "mlp_tiny", target: tuple[str, ...] = ("N",)) -> Any:
    from lbdl_graph.frontends.training.trainer import trace_loss
    from lbdl_graph.passes.optim import Adam
    from lbdl_graph.passes.train_step import make_train_step

    entry = zoo.get(name)
    fwd = trace_loss(entry.model(), dict(entry.inputs), InputSpec(target, "int64"),
                     "cross_entropy", {}, training=True)
    return make_train_step(fwd, Adam())


def test_macs_and_bytes_match_the_summary_rules() -> None:
    g = lenet()
    b = {"N": 3}
    macs = mac_values(g, b)
    assert macs == {n.name: float(node_macs(n, b)) for n in g.nodes if node_macs(n, b)}
    assert sum(macs.values()) == scope_tree(g, b).total_macs
    out = bytes_values(g, b)
    assert out == {n.name: float(sum(type_bytes(v.type, b) for v in n.outputs))
                   for n in g.nodes}


def test_parameter_overlay_sums_to_the_parameter_count() -> None:
    g = attention_block(layers=2)
    vals = param_values(g)
    assert set(vals) == {param_id(p.name) for p in g.params}
    assert sum(vals.values()) == g.num_params()
    step = _step()
    vals = param_values(step.graph, step.info.params)
    assert set(vals) == {input_id(p) for p in step.info.params}
    assert sum(vals.values()) == zoo.get("mlp_tiny").model().num_parameters()


def test_saved_for_backward_counts_activations_the_backward_reads() -> None:
    step = _step()
    g = step.graph
    b = {"N": 4}
    saved = saved_for_backward(g, b)
    relus = [n for n in g.nodes if n.op.name == "relu" and not n.scope.startswith("grad")]
    assert relus
    for n in relus:  # relu's VJP reads its output
        assert saved[n.name] == type_bytes(n.outputs[0].type, b)
    assert saved[input_id("x")] == type_bytes(g.input("x").type, b)  # dW1 = x^T dY
    for name in saved:
        assert not name.startswith(("grad", "optim", "param:"))
    weights = set(step.info.state)
    for n in g.nodes:  # values computed from weights alone are no activations
        if n.inputs and all(v is not None and v.name in weights for v in n.inputs):
            assert n.name not in saved
    # scaling the batch scales the activations
    saved8 = saved_for_backward(g, {"N": 8})
    assert saved8[relus[0].name] == 2 * saved[relus[0].name]


def test_numpy_time_overlay_has_a_measurement_per_node() -> None:
    g = zoo.get("mlp_tiny").trace()
    t = numpy_time_values(g, {"N": 2})
    assert set(t) == {n.name for n in g.nodes}
    assert all(v >= 0 for v in t.values()) and sum(t.values()) > 0
    step = _step()
    ts = numpy_time_values(step.graph, {"N": 2}, state=step.initial_state, training=True)
    assert set(ts) == {n.name for n in step.graph.nodes}


def test_ort_time_overlay_names_the_nodes_of_the_optimised_model() -> None:
    pytest.importorskip("onnxruntime")
    from lbdl_graph.frontends.inspect.explorer_stages import ort_optimized

    model = ort_optimized(zoo.get("mlp_tiny").trace())
    t = ort_time_values(model, {"N": 2})
    names = {n.name for n in model.graph.node}
    assert t and set(t) <= names
    assert len(t) >= len(names) // 2


def test_diff_overlay_puts_removed_nodes_on_the_before_graph() -> None:
    g = attention_block(layers=1)
    stages = build_stages(g, "O2", onnx=False)
    final = stages[-1].graph
    assert final is not None
    rules = stages[-1].rules
    d = graph_diff(g, final, rules)
    before, after = diff_results(d, "before"), diff_results(d, "after")
    assert set(before) == set(d.removed) | set(d.changed.values())
    assert set(after) == set(d.added) | set(d.fused) | set(d.changed)
    assert set(before) <= set(g.node_map) and set(after) <= set(final.node_map)
    for name, r in after.items():
        status = d.status(name)
        assert r["bgColor"] == DIFF_COLORS[status]
        assert r["value"].startswith(status)
        if name in d.fused:
            assert rules[name] in r["value"]  # names the pass that fused it
    for name in d.removed:
        assert before[name]["value"].startswith("removed")
    data = diff_data("diff", d, "a", "b")
    assert set(data) == {"a", "b"}
    assert data["a"]["results"] == before and data["b"]["results"] == after


def test_bundle_overlays_cover_each_stage_and_end_with_the_diffs() -> None:
    g = zoo.get("gpt_tiny").trace()
    step = _step("gpt_tiny", ("N", "T"))
    stages = build_stages(g, "O2", compare="O0", train=step, onnx=False)
    bundle = build_bundle("gpt", stages, compare="O0", bindings={"N": 1, "T": 4})
    names = [label for label, _ in bundle.overlays]
    assert names == ["MACs", "parameters", "output bytes", "saved for backward (bytes)",
                     "pass diff: removed by the next pass", "pass diff: made by this pass",
                     "diff O0 -> final"]
    data = dict(bundle.overlays)
    ids = [s.id for s in stages]
    assert set(data["MACs"]) == set(ids)
    assert set(data["saved for backward (bytes)"]) == {s.id for s in stages if s.kind == "train"}
    passes = [s for s in stages if s.kind in ("traced", "pass")]
    made, gone = data["pass diff: made by this pass"], data["pass diff: removed by the next pass"]
    for a, b in itertools.pairwise(passes):  # each pass made or removed something
        assert b.id in made or a.id in gone
    assert set(made) <= {s.id for s in passes[1:]} and set(gone) <= {s.id for s in passes[:-1]}
    assert set(data["diff O0 -> final"]) == {passes[0].id, passes[-1].id}
    fused = data["diff O0 -> final"][passes[-1].id]["results"]
    assert any(r["value"].startswith("fused: fuse_attention") for r in fused.values())
    assert data["MACs"][passes[0].id]["results"] == {
        k: {"value": v} for k, v in mac_values(g, {"N": 1, "T": 4}).items()}


def test_node_data_gradient_and_empty_graphs() -> None:
    nd = node_data("x", {"a": {"n1": 1.0, "n2": 3.0}, "b": {}}, "#123456")
    assert set(nd) == {"a"}
    assert nd["a"]["gradient"][-1] == {"stop": 1, "bgColor": "#123456"}
    assert nd["a"]["results"]["n2"] == {"value": 3.0}
