"""Tests of lbdl_graph.frontends.inspect: summaries, DOT, SVG layout and graph diffs."""
