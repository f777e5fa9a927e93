"""parse_svg() on hand-made documents, and the bounds of the default pictures of real models."""

from __future__ import annotations

import pytest

from lbdl_graph.frontends import zoo
from lbdl_graph.frontends.inspect import collapse, parse_svg, to_svg

DOC = """<svg xmlns="http://www.w3.org/2000/svg" width="150pt" height="75pt"
 viewBox="0.00 0.00 300.00 150.00">
<g id="graph0" class="graph" transform="scale(1 1) rotate(0) translate(4 146)">
<g id="a" class="node op"><polygon points="0,-140 40,-140 40,-100 0,-100 0,-140"/>
<text font-size="10.00">a</text></g>
<g id="b" class="node"><path d="M30,-120C30,-120 80,-120 80,-120 80,-90 30,-90 30,-120"/></g>
<g id="c" class="node"><ellipse cx="200" cy="-20" rx="20" ry="10"/>
<text style="font-size: 8px">c</text></g>
<g id="k" class="cluster"><polygon points="-2,-145 100,-145 100,-80 -2,-80"/></g>
<g id="e" class="edge"><path d="M10,-100C10,-50 200,-50 200,-30"/></g>
</g></svg>"""


def test_parse_units_transforms_boxes_and_fonts() -> None:
    geo = parse_svg(DOC)
    assert geo.width_px == pytest.approx(200) and geo.height_px == pytest.approx(100)
    assert geo.long_side_px == pytest.approx(200) and geo.bytes == len(DOC.encode())
    boxes = {r.id: r for r in geo.boxes}
    assert set(boxes) == {"a", "b", "c"} and boxes["a"].classes == ("node", "op")
    scale = 200 / 300  # px per user unit
    a = boxes["a"]
    assert (a.x0, a.y0) == pytest.approx((4 * scale, 6 * scale))
    assert (a.width, a.height) == pytest.approx((40 * scale, 40 * scale))
    c = boxes["c"]
    assert (c.x0, c.x1, c.y0, c.y1) == pytest.approx(
        (184 * scale, 224 * scale, 116 * scale, 136 * scale))
    assert [f.id for f in geo.frames] == ["k"]
    assert sorted(geo.font_px) == pytest.approx([8 * scale, 10 * scale])
    assert geo.overlaps() == [("a", "b")]
    assert geo.overlaps(tol=20) == []


def test_touching_boxes_do_not_overlap() -> None:
    doc = ('<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100">'
           '<g class="node" id="p"><polygon points="0,0 10,0 10,10 0,10"/></g>'
           '<g class="node" id="q"><polygon points="10,0 20,0 20,10 10,10"/></g>'
           '<g class="node" id="r"><polygon points="0,10 10,10 10,20 0,20"/></g></svg>')
    geo = parse_svg(doc)
    assert len(geo.boxes) == 3 and geo.overlaps() == []
    assert geo.min_font_px == float("inf")


@pytest.mark.parametrize("bad", ["<svg", "<html/>",
                                 '<svg xmlns="http://www.w3.org/2000/svg" width="1furlong"/>'])
def test_malformed_documents_raise(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_svg(bad)


# the default pictures of real models: every bound of the viewer's targets, checked on dot's SVG
@pytest.mark.parametrize("name", ["gpt2_small", "resnet50", "vit_b16", "mlp_tiny"])
def test_default_picture_bounds(name: str) -> None:
    g = zoo.get(name).trace()
    svg = to_svg(g)
    geo = parse_svg(svg)
    assert len(geo.boxes) == len(collapse(g).boxes) <= 60
    assert geo.overlaps() == []
    assert geo.long_side_px <= 4000
    assert geo.bytes <= 1_000_000
    assert geo.min_font_px >= 9
    for r in geo.boxes:  # every box inside the document
        assert 0 <= r.x0 < r.x1 <= geo.width_px + 0.5 and 0 <= r.y0 < r.y1 <= geo.height_px + 0.5
