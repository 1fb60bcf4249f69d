"""Conceptual figures drawn at build time: Graphviz DOT text in, an SVG that Jupyter shows.

A chapter builds the DOT text from what its cells measured (the frames of a backtrace, the
bvecs gdb read, the clocksource the guest picked), so the picture is as true as the data.
``dot`` is Debian's graphviz package (scripts/setup installs it); the SVG is inlined into the
page and the notebook, so it renders offline.
"""
from __future__ import annotations

import html
import logging
import shutil
import subprocess

from ..errors import BuildError, MissingArtifact

LOG = logging.getLogger(__name__)

# One look for every figure in the book: the page's font, thin lines, no background.
GRAPH_DEFAULTS = ('graph [fontname="Helvetica" fontsize=11 bgcolor="transparent" '
                  'nodesep=0.3 ranksep=0.35];\n'
                  'node [fontname="Helvetica" fontsize=10 shape=box style="rounded" '
                  'penwidth=0.8];\n'
                  'edge [fontname="Helvetica" fontsize=9 penwidth=0.8 arrowsize=0.6];\n')


class Diagram:
    """An SVG figure; Jupyter displays it through ``_repr_svg_``."""

    def __init__(self, svg: str, source: str):
        self.svg = svg
        self.source = source           # the DOT text, for a reader who wants to redraw it

    def _repr_svg_(self) -> str:
        return self.svg

    def save(self, path) -> None:
        with open(path, "w") as f:
            f.write(self.svg)


def label(text: object) -> str:
    """``text`` quoted for use as a DOT label (quotes and backslashes escaped)."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def html_label(text: object) -> str:
    """``text`` escaped for a DOT HTML-like label (``<...>``)."""
    return html.escape(str(text), quote=True)


def dot(body: str, *, directed: bool = True, engine: str = "dot",
        timeout: float = 30.0) -> Diagram:
    """Render a graph whose statements are ``body`` (nodes, edges, subgraphs; no outer braces).

    ``dot("a -> b; b -> c;")`` draws a small chain. The book's common style is added first.
    """
    exe = shutil.which(engine)
    if exe is None:
        raise MissingArtifact(f"graphviz's `{engine}` is not installed: run `scripts/setup` "
                              "(it installs the Debian package graphviz)")
    kind = "digraph" if directed else "graph"
    source = f"{kind} G {{\n{GRAPH_DEFAULTS}{body}\n}}\n"
    try:
        out = subprocess.run([exe, "-Tsvg"], input=source, capture_output=True, text=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"graphviz took longer than {timeout} s", command=[exe, "-Tsvg"]) from exc
    if out.returncode != 0:
        raise BuildError(f"graphviz rejected the figure: {out.stderr.strip()}",
                      command=[exe, "-Tsvg"], status=out.returncode)
    svg = out.stdout
    # Drop the XML prolog and DOCTYPE: the SVG is inlined into HTML.
    start = svg.find("<svg")
    return Diagram(svg[start:] if start >= 0 else svg, source)
