"""graph_diff / diff_text / diff_svg on hand-made rewrites with known answers."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np

from lbdl_graph import Graph, GraphBuilder, Node, Value, ops
from lbdl_graph.frontends import zoo
from lbdl_graph.frontends.cli.common import optimize
from lbdl_graph.frontends.inspect import diff_dot, diff_svg, diff_text, graph_diff, parse_svg
from lbdl_graph.opdef import OpDef

from .models import mlp

SVG = "{http://www.w3.org/2000/svg}"
XLINK = "{http://www.w3.org/1999/xlink}"
FUSED = OpDef("fused_linear", ("x", "w", "b"), infer=lambda x, w, b: ops.matmul.infer(x, w))


def fuse_fc1(g: Graph, *, keep_objects: bool) -> Graph:
    """fc1 matmul+add -> one fused_linear node. With ``keep_objects`` the fused node reuses the
    add's output value so every later node object is shared; otherwise the later nodes are
    re-emitted under new names (as a rebuilding pass might)."""
    mm, add = g.node_map["fc1/matmul"], g.node_map["fc1/add"]
    ins = (g.inputs[0], g.values["fc1.weight"], g.values["fc1.bias"])
    if keep_objects:
        fused = Node(FUSED, ins, add.outputs, {}, "fc1/fused_linear")
        rest = [n for n in g.nodes if n not in (mm, add)]
        return g.replace(nodes=[fused, *rest])
    b = GraphBuilder(g.name)
    b.inputs, b.params = list(g.inputs), list(g.params)
    with b:
        (y,) = b.add_node(FUSED, list(ins), {}, name="fc1/fused_linear")
        (r,) = b.add_node(ops.relu, [y], {}, name="act")
        (m,) = b.add_node(ops.matmul, [r, g.values["fc2.weight"]], {}, name="fc2/mm")
        (out,) = b.add_node(ops.add, [m, g.values["fc2.bias"]], {}, name="fc2/plus")
    return b.build([out], verify=False)


def test_fusion_with_shared_nodes() -> None:
    before = mlp()
    after = fuse_fc1(before, keep_objects=True)
    d = graph_diff(before, after, {"fc1/fused_linear": "fuse_linear"})
    assert d.removed == ("fc1/matmul", "fc1/add")
    assert d.fused == ("fc1/fused_linear",) and d.added == () and d.changed == {}
    assert d.replaced == {"fc1/fused_linear": ("fc1/matmul", "fc1/add")}
    assert d.kept == {n: n for n in ("fc1/relu", "fc2/matmul", "fc2/add")}
    assert d.rules["fc1/fused_linear"] == "fuse_linear"
    assert d.rules["fc1/matmul"] == "fuse_linear"  # removed nodes inherit the rule
    assert d.status("fc1/fused_linear") == "fused"
    assert d.status("fc1/add", side="before") == "removed"
    assert d.replaced_by() == {"fc1/matmul": ["fc1/fused_linear"],
                               "fc1/add": ["fc1/fused_linear"]}


def test_fusion_with_renamed_consumers_matches_structurally() -> None:
    before = mlp()
    after = fuse_fc1(before, keep_objects=False)
    d = graph_diff(before, after)
    assert d.fused == ("fc1/fused_linear",)
    assert d.replaced["fc1/fused_linear"] == ("fc1/matmul", "fc1/add")
    assert d.kept == {"act": "fc1/relu", "fc2/mm": "fc2/matmul", "fc2/plus": "fc2/add"}
    assert d.removed == ("fc1/matmul", "fc1/add") and d.rules == {}


def test_removed_node_without_replacement() -> None:
    with GraphBuilder("g") as b:
        x = b.input("x", "f32", (4,))
        y = ops.relu(ops.identity(x), name="act")
        before = b.build([y])
    with GraphBuilder("g") as b:
        x2 = b.input("x", "f32", (4,))
        after = b.build([ops.relu(x2, name="act")])
    d = graph_diff(before, after)
    assert d.removed == ("identity",) and d.added == () and d.fused == ()
    assert d.kept == {"act": "act"}


def test_decomposition_is_added_not_fused() -> None:
    w = np.ones(8, np.float32)
    with GraphBuilder("ln") as b:
        x = b.input("x", "f32", ("N", 8))
        scale = b.param("ln.weight", w)
        with b.scope("ln"):
            y = ops.layer_norm(x, scale)
        before = b.build([ops.relu(y, name="act")])
    b = GraphBuilder("ln")
    b.inputs, b.params = list(before.inputs), list(before.params)
    with b, b.scope("ln"):
        xv, sv = before.inputs[0], before.params[0].value
        c = ops.sub(xv, ops.reduce_mean(xv, axes=(-1,)))
        var = ops.reduce_mean(ops.mul(c, c), axes=(-1,))
        y2 = ops.mul(ops.div(c, ops.sqrt(var)), sv)
    with b:
        after = b.build([ops.relu(y2, name="act")])
    d = graph_diff(before, after, {"ln/mul_1": "decompose_layer_norm"})
    new_ln = [n.name for n in after.nodes if n.name.startswith("ln/")]
    assert d.removed == ("ln/layer_norm",) and d.fused == ()
    assert d.added == tuple(new_ln)
    assert all(d.replaced[n] == ("ln/layer_norm",) for n in new_ln)
    assert d.kept == {"act": "act"}
    assert d.rules["ln/layer_norm"] == "decompose_layer_norm"


def test_same_name_other_op_is_changed() -> None:
    with GraphBuilder("g") as b:
        x = b.input("x", "f32", (4,))
        before = b.build([ops.tanh(ops.relu(x, name="act"), name="out")])
    with GraphBuilder("g") as b:
        x = b.input("x", "f32", (4,))
        after = b.build([ops.tanh(ops.gelu(x, name="act"), name="out")])
    d = graph_diff(before, after)
    assert d.changed == {"act": "act"} and d.removed == () and d.added == ()
    assert d.kept == {"out": "out"}
    assert d.status("act") == "changed" and d.status("act", side="before") == "changed"
    text = diff_text(before, after)
    assert "\n~ act  gelu  f32[4]  was relu\n" in text


def test_diff_text_listing() -> None:
    before = mlp()
    after = fuse_fc1(before, keep_objects=False)
    text = diff_text(before, after, rule_names={"fc1/fused_linear": "fuse_linear"})
    lines = text.splitlines()
    assert lines[:3] == ["--- before: mlp (5 nodes)", "+++ after: mlp (4 nodes)",
                         "@@ 2 removed, 0 added, 1 fused, 0 changed, 3 kept @@"]
    marks = [(line[0], line[2:].split()[0]) for line in lines[3:]]
    assert marks == [("-", "fc1/matmul"), ("-", "fc1/add"), ("+", "fc1/fused_linear"),
                     (" ", "act"), (" ", "fc2/mm"), (" ", "fc2/plus")]
    fused = lines[5]
    assert "fuses fc1/matmul, fc1/add" in fused and fused.endswith("[rule: fuse_linear]")
    assert lines[3].endswith("-> fc1/fused_linear") and lines[6].endswith("(was fc1/relu)")
    short = diff_text(before, after, rule_names={"fc1/fused_linear": "fuse_linear"},
                      context=1).splitlines()
    assert short[3:] == [*lines[3:7], "  ..."]


def test_identical_graphs_have_no_changes() -> None:
    g = mlp()
    d = graph_diff(g, g)
    assert d.counts == {"kept": 5, "changed": 0, "removed": 0, "added": 0, "fused": 0}
    assert "@@ 0 removed, 0 added, 0 fused, 0 changed, 5 kept @@" in diff_text(g, g)


def test_diff_svg_marks_nodes() -> None:
    before = mlp()
    after = fuse_fc1(before, keep_objects=True)
    svg = diff_svg(before, after, rule_names={"fc1/fused_linear": "fuse_linear"})
    root = ET.fromstring(svg)
    groups = {g.get("id"): (g.get("class") or "").split() for g in root.iter(f"{SVG}g")
              if g.get("id")}
    ops = [i for i, c in groups.items() if "node" in c and i.split(":")[1] == "node"]
    assert len(ops) == len(before.nodes) + len(after.nodes) == len(set(ops))
    assert "removed" in groups["before:node:fc1/matmul"]
    assert "removed" in groups["before:node:fc1/add"]
    assert groups["before:node:fc1/relu"] == ["node", "op"]  # dot's class, then the kind
    assert "fused" in groups["after:node:fc1/fused_linear"]
    assert groups["after:node:fc2/add"] == ["node", "op"]
    assert {"cluster:before", "cluster:after"} <= set(groups)
    fused = next(g for g in root.iter(f"{SVG}g") if g.get("id") == "after:node:fc1/fused_linear")
    texts = [t.text for t in fused.iter(f"{SVG}text")]
    assert texts[0] == "fused_linear"
    assert texts[-4:] == ["fuses 2:", "fc1/matmul", "fc1/add", "rule: fuse_linear"]
    tip = next(g for g in root.iter(f"{SVG}g") if g.get("id") == "before:node:fc1/add")
    title = next(a for a in tip.iter(f"{SVG}a")).get(f"{XLINK}title")
    assert "replaced by fc1/fused_linear" in title and "fuse_linear" in title
    assert "1 removed" not in svg  # single nodes say what replaced them, not a count
    assert parse_svg(svg).overlaps() == []


def test_diff_of_collapsed_scopes_counts_changes() -> None:
    before = zoo.get("gpt_tiny").trace()
    after, _, rules = optimize(before, "O2")
    text = diff_dot(before, after, rule_names=rules, depth=1)
    d = graph_diff(before, after, rules)
    gone = sum(n.startswith("layers.0.") for n in d.removed)
    assert f"{gone} removed" in text and "rules: fuse_linear" in text
    assert '"after:scope:layers.0" [' in text and 'class="scope fused"' in text
    assert text.count("subgraph") == 2  # the two sides; depth 1 opens no scope


def test_value_objects_shared_across_graphs() -> None:
    before = mlp()
    after = fuse_fc1(before, keep_objects=True)
    shared = set(before.iter_values()) & set(after.iter_values())
    assert isinstance(next(iter(shared)), Value)
    assert before.node_map["fc1/relu"] is after.node_map["fc1/relu"]


def test_chained_fusions_each_get_their_own_nodes() -> None:
    before = mlp()
    v = before.values
    b = GraphBuilder("mlp")
    b.inputs, b.params = list(before.inputs), list(before.params)
    with b:
        (h,) = b.add_node(FUSED, [before.inputs[0], v["fc1.weight"], v["fc1.bias"]], {},
                          name="fc1/linear")
        (y,) = b.add_node(FUSED, [h, v["fc2.weight"], v["fc2.bias"]], {}, name="fc2/linear")
    after = b.build([y], verify=False)
    d = graph_diff(before, after)
    assert d.fused == ("fc1/linear", "fc2/linear")
    assert d.replaced == {"fc1/linear": ("fc1/matmul", "fc1/add", "fc1/relu"),
                          "fc2/linear": ("fc2/matmul", "fc2/add")}
    assert len(d.removed) == 5 and d.kept == {}
