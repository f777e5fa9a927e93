"""``lbdl-graph ops``: every registered op and which facets it has."""

from __future__ import annotations

import argparse
import importlib
import json
from typing import Any

from lbdl_graph import OPS, OpTable, Trait

# (column title, module, table attribute); a table whose module is missing shows as absent.
FACETS = (
    ("numpy", "lbdl_graph.backends.numpy.kernels", "KERNELS"),
    ("onnx", "lbdl_graph.backends.onnx.lowering", "LOWERINGS"),
    ("vjp", "lbdl_graph.passes.autodiff.table", "VJPS"),
)


def facet_tables() -> dict[str, OpTable[Any] | None]:
    """The facet tables by column name (None where the package providing it is absent)."""
    tables: dict[str, OpTable[Any] | None] = {}
    for title, module, attr in FACETS:
        try:
            tables[title] = getattr(importlib.import_module(module), attr)
        except ImportError:
            tables[title] = None
    return tables


def facet_status(op: Any, table: OpTable[Any] | None) -> str:
    """'yes' (own rule), 'decomp' (uses the decomposition), 'n/a' (not required) or 'MISSING'."""
    if table is None:
        return "MISSING"
    if op in table:
        return "yes"
    if not table.required(op):
        return "n/a"
    return "decomp" if op.decompose is not None else "MISSING"


def _run(args: argparse.Namespace) -> int:
    tables = facet_tables()
    rows = []
    for name in sorted(OPS):
        op = OPS[name]
        row = {"op": name, "schema": "yes"}
        row.update({t: facet_status(op, tab) for t, tab in tables.items()})
        row["traits"] = ",".join(sorted(t.value for t in op.traits))
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    cols = ["op", "schema", *tables, "traits"]
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(r[c].ljust(widths[c]) for c in cols))
    diff = sum(1 for op in OPS.values() if op.has(Trait.DIFFERENTIABLE))
    counts = ", ".join(
        f"{t}: {sum(1 for r in rows if r[t] in ('yes', 'decomp'))}" for t in tables
    )
    print(f"\n{len(rows)} ops ({diff} differentiable); schema: {len(rows)}, {counts}")
    missing = sum(1 for r in rows for t in tables if r[t] == "MISSING")
    print(f"missing facets: {missing}")
    return 0


def register(sub: Any) -> None:
    """Add the `ops` verb."""
    p = sub.add_parser("ops", help="list every op and its facets (schema, kernel, lowering, VJP)")
    p.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    p.set_defaults(func=_run)
