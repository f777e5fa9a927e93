"""``python -m lbdl_graph``: the command-line interface.

This entry point is the one place in the core package that reaches into ``lbdl_graph.frontends``
(where the CLI lives); the IR modules themselves never import frontends, passes or backends.
"""

from __future__ import annotations

import sys

from lbdl_graph.frontends.cli import main

if __name__ == "__main__":
    sys.exit(main())
