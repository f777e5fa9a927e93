"""Parameter folding: golden cases, what it refuses, the zoo at O2 and training graphs."""

from __future__ import annotations

import numpy as np
import pytest

from lbdl_graph import Graph, ops, verify
from lbdl_graph.backends.numpy import Interpreter
from lbdl_graph.frontends import manual_seed
from lbdl_graph.frontends.zoo import ZOO
from lbdl_graph.passes.fold_parameters import fold_params, refold_arrays, unfold_arrays
from lbdl_graph.passes.manager import PASSES, run_passes
from tests.passes.util import check_pass, check_unchanged, graph_of


def _param_layout_nodes(graph: Graph) -> list[str]:
    """Nodes of a layout op (transpose, reshape, cast, ...) that read only parameters."""
    params = {p.value for p in graph.params}
    layout = (ops.transpose, ops.reshape, ops.squeeze, ops.unsqueeze, ops.cast, ops.identity)
    return [n.name for n in graph.nodes if n.op in layout
            and all(v in params for v in n.inputs if v is not None)]


def test_registered() -> None:
    assert PASSES["fold_params"] is fold_params


def test_transpose_of_a_weight_becomes_a_stored_weight() -> None:
    r = check_pass(fold_params, """
    graph g(%x: f32[N,4]):
      param %w: f32[3,4]
      param %b: f32[3]
      %0: f32[4,3] = transpose[perm=(1, 0)](%w)
      %1: f32[N,3] = matmul(%x, %0)
      %2: f32[N,3] = add(%1, %b)
      return %2
    """, """
    graph g(%x: f32[N,4]):
      param %w.T: f32[4,3]
      param %b: f32[3]
      %0: f32[N,3] = matmul(%x, %w.T)
      %1: f32[N,3] = add(%0, %b)
      return %1
    """, stats={"folded": 1, "new_params": 1, "dropped_sources": 1})
    g = graph_of("graph g(%x: f32[N,4]):\n  param %w: f32[3,4]\n  param %b: f32[3]\n"
                 "  %0: f32[4,3] = transpose[perm=(1, 0)](%w)\n  %1: f32[N,3] = matmul(%x, %0)\n"
                 "  %2: f32[N,3] = add(%1, %b)\n  return %2\n")
    np.testing.assert_array_equal(fold_params(g).graph.param_map["w.T"].data,
                                  g.param_map["w"].data.T)
    assert r.graph.metadata["folded_params"] == {"w.T": "transpose[perm=[1, 0]](w)"}
    assert r.graph.param_map["w.T"].trainable


def test_a_chain_folds_into_one_weight_and_a_buffer_stays_a_buffer() -> None:
    check_pass(fold_params, """
    graph g(%x: f32[N,6]):
      buffer %w: f32[2,3,4]
      %0: f32[4,3,2] = transpose[perm=(2, 1, 0)](%w)
      %1: f32[4,6] = reshape[shape=(4, 6)](%0)
      %2: f32[6,4] = transpose[perm=(1, 0)](%1)
      %3: f32[N,4] = matmul(%x, %2)
      return %3
    """, """
    graph g(%x: f32[N,6]):
      buffer %w.T.reshape.T: f32[6,4]
      %0: f32[N,4] = matmul(%x, %w.T.reshape.T)
      return %0
    """, stats={"folded": 3, "new_params": 1, "dropped_sources": 1})


def test_a_tied_weight_keeps_its_source() -> None:
    # the embedding table is read by the lookup and, transposed, by the output head
    check_pass(fold_params, """
    graph g(%ids: i64[N]):
      param %emb: f32[5,3]
      %0: f32[N,3] = gather[axis=0](%emb, %ids)
      %1: f32[3,5] = transpose[perm=(1, 0)](%emb)
      %2: f32[N,5] = matmul(%0, %1)
      return %2
    """, """
    graph g(%ids: i64[N]):
      param %emb: f32[5,3]
      param %emb.T: f32[3,5]
      %0: f32[N,3] = gather[axis=0](%emb, %ids)
      %1: f32[N,5] = matmul(%0, %emb.T)
      return %1
    """, stats={"folded": 1, "new_params": 1, "kept_sources": 1})


def test_repeated_chains_share_one_weight() -> None:
    # an unrolled recurrence transposes its weight once per step
    check_pass(fold_params, """
    graph g(%x: f32[2,3]):
      param %w: f32[3,3]
      %0: f32[3,3] = transpose[perm=(1, 0)](%w)
      %1: f32[2,3] = matmul(%x, %0)
      %2: f32[3,3] = transpose[perm=(1, 0)](%w)
      %3: f32[2,3] = matmul(%1, %2)
      return %3
    """, """
    graph g(%x: f32[2,3]):
      param %w.T: f32[3,3]
      %0: f32[2,3] = matmul(%x, %w.T)
      %1: f32[2,3] = matmul(%0, %w.T)
      return %1
    """, stats={"folded": 2, "new_params": 1, "dropped_sources": 1})


def test_slices_concat_and_a_narrowing_cast_fold_with_constants() -> None:
    check_pass(fold_params, """
    graph g(%x: f16[N,3]):
      param %w: f32[2,4]
      %0: f32[1,4] = constant[value=tensor(f32[1,4], [[1.0, 2.0, 3.0, 4.0]])]()
      %1: f32[3,4] = concat[axis=0](%w, %0)
      %2: f16[3,4] = cast[to=f16](%1)
      %3: f16[3,2] = slice[starts=(0,), ends=(2,), axes=(1,)](%2)
      %4: f16[N,2] = matmul(%x, %3)
      return %4
    """, """
    graph g(%x: f16[N,3]):
      param %w.concat.f16.slice: f16[3,2]
      %0: f16[N,2] = matmul(%x, %w.concat.f16.slice)
      return %0
    """, stats={"folded": 3, "new_params": 1, "dropped_sources": 1}, rtol=1e-3, atol=1e-3)


def test_identity_of_a_parameter_reads_the_parameter() -> None:
    check_pass(fold_params, """
    graph g(%x: f32[3]):
      param %w: f32[3]
      %0: f32[3] = identity(%w)
      %1: f32[3] = add(%x, %0)
      return %1
    """, """
    graph g(%x: f32[3]):
      param %w: f32[3]
      %0: f32[3] = add(%x, %w)
      return %0
    """, stats={"folded": 1})


LEFT_ALONE = {
    # widening a quantised weight would store it 4x larger: the cast stays at run time
    "widening_cast": """
      graph g(%x: f32[N,4]):
        buffer %q: i8[4,4]
        %0: f32[4,4] = cast[to=f32](%q)
        %1: f32[N,4] = matmul(%x, %0)
        return %1
    """,
    # expand of a scalar to a big shape would bloat the weights
    "expand": """
      graph g(%x: f32[8,8]):
        param %s: f32[]
        %0: f32[8,8] = expand[shape=(8, 8)](%s)
        %1: f32[8,8] = mul(%x, %0)
        return %1
    """,
    # an embedding lookup reads the input's ids: computed at run time
    "lookup": """
      graph g(%ids: i64[N]):
        param %emb: f32[5,3]
        %0: f32[N,3] = gather[axis=0](%emb, %ids)
        return %0
    """,
    # arithmetic is not layout: exp(w) stays computed
    "arithmetic": """
      graph g(%x: f32[3]):
        param %w: f32[3]
        %0: f32[3] = exp(%w)
        %1: f32[3] = mul(%x, %0)
        return %1
    """,
    # a chain that computes a graph output keeps the output's name
    "graph_output": """
      graph g(%x: f32[3]):
        param %w: f32[3,2]
        %0: f32[2,3] = transpose[perm=(1, 0)](%w)
        return %0
    """,
    # constants only: fold_constants' job
    "constants_only": """
      graph g(%x: f32[2]):
        %0: f32[2,1] = constant[value=tensor(f32[2,1], [[1.0], [2.0]])]()
        %1: f32[1,2] = transpose[perm=(1, 0)](%0)
        %2: f32[1,2] = add(%x, %1)
        return %2
    """,
}


@pytest.mark.parametrize("text", LEFT_ALONE.values(), ids=LEFT_ALONE.keys())
def test_left_alone(text: str) -> None:
    check_unchanged(fold_params, text)


def _traced(name: str, training: bool = False) -> tuple[Graph, dict[str, np.ndarray]]:
    manual_seed(0)
    entry = ZOO[name]
    return entry.trace(training=training), entry.example_inputs()


@pytest.mark.parametrize("name", ["gpt_tiny", "gpt_mini", "resnet_tiny", "lstm_lm"])
def test_o2_inference_graphs_read_no_transposed_parameter(name: str) -> None:
    g, feeds = _traced(name)
    assert _param_layout_nodes(g)  # the traced graph transposes its weights
    r = run_passes(g, "O2")  # traced in evaluation mode: the level folds parameters
    assert r.report.passes[0].name == "fold_params" and r.report.passes[0].changed
    o = r.graph
    verify(o)
    assert _param_layout_nodes(o) == []
    params = {p.value for p in o.params}
    assert not [n.name for n in o.nodes if n.op is ops.transpose and n.inputs[0] in params]
    want = Interpreter(g, training=False).run(feeds)
    got = Interpreter(o, training=False).run(feeds)
    assert list(got) == list(want)
    for k, w in want.items():
        np.testing.assert_allclose(got[k], w, rtol=1e-5, atol=1e-5, err_msg=k)
    # the pass alone changes no bit: the stored weights are the transposes the graph computed
    alone = Interpreter(fold_params(g).graph, training=False).run(feeds)
    for k, w in want.items():
        np.testing.assert_array_equal(alone[k], w, err_msg=k)
    # idempotent, alone and as part of the level
    again = fold_params(o)
    assert again.changed is False and again.graph is o
    assert not run_passes(o, "O2").changed


def test_stored_transposes_share_the_source_data_read_only() -> None:
    g, _ = _traced("gpt_mini")  # tied embedding: tok_emb.weight is also the head
    o = fold_params(g).graph
    src, t = g.param_map["tok_emb.weight"].data, o.param_map["tok_emb.weight.T"].data
    assert np.shares_memory(src, t) and t.shape == src.shape[::-1]
    assert not t.flags.writeable  # (traced weights are read-only too: shared copy-on-write)


def test_sources_are_listed_where_they_were() -> None:
    g, _ = _traced("gpt_tiny")
    o = fold_params(g).graph
    old = [p.name for p in g.params]
    new = [p.name.removesuffix(".T") for p in o.params]
    assert new == old  # every gpt_tiny weight is read transposed only: renamed in place
    assert g.num_params() == o.num_params()


def test_training_graphs_are_untouched() -> None:
    from lbdl_graph.frontends.cli.export_cmd import loss_for
    from lbdl_graph.frontends.training.trainer import trace_loss
    from lbdl_graph.passes.optim import Adam
    from lbdl_graph.passes.train_step import make_train_step

    g, _ = _traced("gpt_tiny", training=True)
    assert _param_layout_nodes(g)
    r = fold_params(g)
    assert r.changed is False and r.graph is g
    assert fold_params(g.replace(metadata={})).changed  # the training mark is what protects it
    assert "fold_params" not in [p.name for p in run_passes(g, "O2").report.passes]
    manual_seed(0)
    entry = ZOO["mlp_tiny"]
    loss, target = loss_for(entry)
    fwd = trace_loss(entry.model(), entry.inputs, target, loss, {}, training=True)
    step = make_train_step(fwd, Adam()).graph
    assert fold_params(step).graph is step
    names = [p.name for p in run_passes(step, "O2", inference=None).report.passes]
    assert "fold_params" not in names
    assert fold_params(step).changed is False


def test_pipeline_inference_switch() -> None:
    g, _ = _traced("mlp_tiny")
    assert "fold_params" not in [p.name for p in run_passes(g, "O2", inference=False)
                                 .report.passes]
    assert [p.name for p in run_passes(g, "O0").report.passes] == []
    assert [p.name for p in run_passes(g, "O0", inference=True).report.passes] == ["fold_params"]
    # a graph that does not say how it was traced gets the pass only when asked
    plain = g.replace(metadata={})
    assert "fold_params" not in [p.name for p in run_passes(plain, "O2").report.passes]
    asked = run_passes(plain, "O1", inference=True)
    assert asked.report.passes[0].name == "fold_params" and asked.report.passes[0].changed


@pytest.mark.parametrize("name", ["gpt_mini", "transformer_tiny", "lenet"])
def test_unfold_gives_back_the_model_parameters(name: str) -> None:
    g, _ = _traced(name)
    o = fold_params(g).graph
    state, folds = unfold_arrays(o.param_arrays(), o.metadata["folded_params"])
    want = g.param_arrays()
    # sliced-and-transposed weights (transformer cross-attention) stay stored under their names
    recipes = o.metadata["folded_params"]
    sliced = {k for k, r in recipes.items() if "slice" in r}
    sliced_sources = {recipes[k].split("(")[-1].rstrip(")") for k in sliced}
    assert set(state) == (set(want) - sliced_sources) | sliced
    for k in set(state) - sliced:
        np.testing.assert_array_equal(state[k], want[k], err_msg=k)
    again = refold_arrays(state, folds)
    assert set(again) == set(o.param_arrays())
    for k, v in o.param_arrays().items():
        np.testing.assert_array_equal(again[k], v, err_msg=k)
    # a merged update reaches every stored copy of a tied weight
    tied = [k for k, (src, _, stored) in folds.items() if stored]
    assert bool(tied) == (name in ("gpt_mini", "transformer_tiny"))
    for k in tied:
        src = folds[k][0]
        bumped = refold_arrays({**state, src: state[src] + 1}, folds)
        np.testing.assert_array_equal(bumped[k], (state[src] + 1).T)
        np.testing.assert_array_equal(bumped[src], state[src] + 1)


def test_imported_onnx_at_o2_has_no_identity_or_transposed_initializer() -> None:
    """A foreign export: Identity of a shared initializer, Transpose of a weight, Identity
    naming the output (as torch.onnx writes them)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from lbdl_graph.frontends.onnx import import_onnx

    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 4)).astype(np.float32)
    nodes = [helper.make_node("Identity", ["w"], ["w_shared"]),
             helper.make_node("Transpose", ["w_shared"], ["wt"], perm=[1, 0]),
             helper.make_node("MatMul", ["x", "wt"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Identity", ["r"], ["y"])]
    graph = helper.make_graph(
        nodes, "foreign", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        initializer=[numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    g = import_onnx(model)
    o = run_passes(g, "O2", inference=True).graph
    assert o.op_counts() == {"matmul": 1, "relu": 1}
    assert [p.name for p in o.params] == ["w.T"] and o.output_names() == ["y"]
    feeds = {"x": rng.standard_normal((5, 4)).astype(np.float32)}
    np.testing.assert_allclose(Interpreter(o).run(feeds)["y"],
                               np.maximum(feeds["x"] @ w.T, 0), rtol=1e-6)
