"""The book: its sources tell no untruths, it builds against the lab VM, and it renders.

Rule 1, no pasted output. Outside `{code-cell}` cells (whose output the build produces), a
book source (book/**/*.md, markdown cells of book/**/*.ipynb) may not contain a fenced block
that looks like program output:
  - a fence whose language is one of OUTPUT_LANGS (```text, ```console, ```output, ...), also
    as the argument of a {code-block}/{code}/{sourcecode} directive;
  - a code directive whose :caption: or :name: says output/console/terminal/result/log;
  - any other fence whose first line starts with a prompt: `$ `, `# `, `~ $`, `user@host:~$ `,
    `>>> `. (A shell snippet that is *input* starts with the command; comments go after it.)
Only ``` and ~~~ fences are scanned (not ::: colon fences).

Rule 2, figures come from the build. In prose (everything outside front matter and code
fences; admonitions and other non-code directives are prose), a number followed by a unit
(UNIT_RE: ms, µs, s, MB, Hz, hits/s, exits/s, %, ...) must come from a `{glue}`/`{glue:text}`
role (or `{eval}`), which are removed before the scan. A number that is not a measurement —
say the 100 µs a chapter *asks about* — is allowed by a marker in the same file:
`<!-- literal: 100 µs -->` (several: `<!-- literal: 100 µs; 256 MB -->`).
"""
from __future__ import annotations

import json
import re
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BOOK = REPO / "book"

OUTPUT_LANGS = {"text", "txt", "plain", "plaintext", "console", "output", "shell-session",
                "sh-session", "terminal", "log", "ansi"}
CODE_DIRECTIVES = {"code-cell", "code-block", "code", "sourcecode", "literalinclude", "raw"}
PROMPT_RE = re.compile(r"^\s*(\$ |# |~ ?[$#] |>>> |\S+@\S+:\S*[$#] )")
OUTPUT_WORD_RE = re.compile(r"output|console|terminal|result|log", re.I)
FENCE_RE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*(.*)$")
UNIT_RE = re.compile(
    r"(?<![\w.\-/])\d+(?:[.,]\d+)?\s?"
    r"(?:ms|µs|μs|us|ns|s|secs?|seconds?|min|minutes?|[kMGT]i?B|KB|[kMG]?Hz|%"
    r"|(?:hits|exits|ops|samples|pings)/s)(?![\w/])")
ROLE_RE = re.compile(r"\{(?:glue(?::\w+)?|eval)\}`[^`]*`")
ALLOW_RE = re.compile(r"<!--\s*literal:(.*?)-->", re.S)


def book_sources(root: Path = BOOK) -> list[Path]:
    skip = {"_build", "_generated_static", ".ipynb_checkpoints"}
    return sorted(p for ext in ("*.md", "*.ipynb") for p in root.rglob(ext)
                  if not skip & set(p.relative_to(root).parts))


def markdown_of(path: Path) -> str:
    """The markdown to scan: the whole .md file, or the markdown cells of a notebook."""
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text())["cells"]
        return "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return path.read_text()


def split_fences(text: str) -> tuple[list[str], list[tuple[int, str, list[str]]]]:
    """Prose lines (code fences blanked) and the fences: (line number, info string, body)."""
    lines, prose, fences = text.splitlines(), [], []
    i = 0
    if lines and lines[0].strip() == "---":               # front matter
        end = next((j for j in range(1, len(lines)) if lines[j].strip() == "---"), 0)
        prose += [""] * (end + 1)
        i = end + 1
    while i < len(lines):
        m = FENCE_RE.match(lines[i])
        if not m:
            prose.append(lines[i])
            i += 1
            continue
        marker, info = m.group(2), m.group(3).strip()
        close = re.compile(rf"^\s*{re.escape(marker[0])}{{{len(marker)},}}\s*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        body = lines[i + 1:j]
        fences.append((i + 1, info, body))
        directive = re.match(r"\{([\w:-]+)\}", info)
        if directive and directive.group(1) not in CODE_DIRECTIVES:   # admonitions: prose
            prose += [""] + [l for l in body if not re.match(r"\s*:\w[\w-]*:", l)] + [""]
        else:
            prose += [""] * (len(body) + 2)
        i = j + 1
    return prose, fences


def pasted_output(text: str) -> list[str]:
    """Rule 1: fences that look like pasted program output."""
    problems = []
    for line, info, body in split_fences(text)[1]:
        directive = re.match(r"\{([\w:-]+)\}\s*(\S*)", info)
        if directive and directive.group(1) == "code-cell":
            continue
        options = [l for l in body if re.match(r"\s*:\w[\w-]*:", l)]
        content = [l for l in body if l not in options and l.strip()]
        lang = directive.group(2) if directive else info.split()[0] if info else ""
        if directive and directive.group(1) not in CODE_DIRECTIVES - {"raw"}:
            continue                                          # a note, figure, ...
        if lang.lower() in OUTPUT_LANGS:
            problems.append(f"line {line}: a ```{info} block (fenced output)")
        elif any(re.match(r"\s*:(caption|name):", o) and OUTPUT_WORD_RE.search(o)
                 for o in options):
            problems.append(f"line {line}: a code block captioned as output")
        elif content and PROMPT_RE.match(content[0]):
            problems.append(f"line {line}: a block starting with a prompt: {content[0].strip()!r}")
    return problems


def literal_figures(text: str) -> list[str]:
    """Rule 2: numbers with units in prose that do not come from glue/eval or a marker."""
    allowed = {" ".join(a.split()) for m in ALLOW_RE.finditer(text)
               for a in m.group(1).split(";") if a.strip()}
    prose = "\n".join(split_fences(ALLOW_RE.sub("", text))[0])
    prose = ROLE_RE.sub("", re.sub(r"<!--.*?-->", "", prose, flags=re.S))
    problems = []
    for n, line in enumerate(prose.splitlines(), 1):
        problems += [f"line {n}: {m.group(0)!r} (glue it, or mark it <!-- literal: ... -->)"
                     for m in UNIT_RE.finditer(line) if " ".join(m.group(0).split()) not in allowed]
    return problems


@pytest.mark.parametrize("source", book_sources(), ids=lambda p: str(p.relative_to(BOOK)))
def test_no_pasted_output(source):
    assert not pasted_output(markdown_of(source)), pasted_output(markdown_of(source))


@pytest.mark.parametrize("source", book_sources(), ids=lambda p: str(p.relative_to(BOOK)))
def test_figures_in_prose_come_from_the_build(source):
    assert not literal_figures(markdown_of(source)), literal_figures(markdown_of(source))


def test_the_scans_catch_what_they_should(tmp_path):
    """Both rules, on a page written to break them (and a notebook with the same text)."""
    bad = """---
kernelspec: {name: python3}
---
# Timing: 12 ms

```text
Linux (none) 6.1.0 #1 x86_64
```

```sh
$ uname -a
```

```{code-block} python
:caption: Program output
print(1)
```

```{note}
A boot takes 0.7 s here.
```

```{code-cell} ipython3
# a comment in a cell is fine, and so is 5 ms in code
print("$ not a prompt")
```

```sh
make book   # input, not output
```

The median was {glue:text}`median:.0f` µs; we ask about 100 µs. <!-- literal: 100 µs -->
It ran at 480 hits/s and 3.5 exits/s; 85 MB of vmlinux; linux-source-6.1 is a name.
"""
    page = tmp_path / "page.md"
    page.write_text(bad)
    notebook = tmp_path / "page.ipynb"
    notebook.write_text(json.dumps({"cells": [
        {"cell_type": "markdown", "source": bad.split("---\n", 2)[2].splitlines(True)},
        {"cell_type": "code", "source": ["```text\n", "not checked: code\n", "```\n"]}]}))
    assert book_sources(tmp_path) == [notebook, page]
    for source in (page, notebook):
        text = markdown_of(source)
        pasted = pasted_output(text)
        assert len(pasted) == 3, pasted
        assert "```text" in pasted[0] and "caption" in pasted[2] and "'$ uname -a'" in pasted[1]
        figures = [p.split("'")[1] for p in literal_figures(text)]
        assert figures == ["12 ms", "0.7 s", "480 hits/s", "3.5 exits/s", "85 MB"], figures


def png(width: int, height: int) -> bytes:
    """A valid grey PNG, without any imaging library."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    rows = b"".join(b"\0" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)     # 8-bit greyscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def test_check_book_fails_on_broken_pages(tmp_path):
    """check-book really looks: each broken page fails with its reason, the good one passes."""
    pages = {
        "good": '<img src="ok.png"><p>fine</p>',
        "missing-image": '<img src="nowhere.png">',
        "corrupt-image": '<img src="corrupt.png">',
        "cdn": '<script src="https://cdn.jsdelivr.net/npm/requirejs@2.3.8/require.js"></script>',
        "widget-error": "<p>Error displaying widget: model not found</p>",
        "widget-unrendered": '<script type="application/vnd.jupyter.widget-view+json">'
                             '{"version_major": 2, "version_minor": 0, "model_id": "x"}</script>',
        "traceback": '<div class="output traceback"><pre>Traceback (most recent call last):'
                     "</pre></div>",
    }
    for name, body in pages.items():
        (tmp_path / f"{name}.html").write_text(f"<html><body>{body}</body></html>")
    (tmp_path / "ok.png").write_bytes(png(4, 3))
    (tmp_path / "corrupt.png").write_bytes(png(4, 3)[:40])
    out = subprocess.run([REPO / "scripts/check-book", tmp_path, "--screenshots",
                          tmp_path / "shots"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr
    verdicts = {page: v.strip() for v, page in re.findall(r"^(ok|FAIL)\s+(\S+)\.html",
                                                          out.stdout, re.M)}
    assert verdicts == {name: "ok" if name == "good" else "FAIL" for name in pages}, out.stdout
    for reason in ("image did not load: .*nowhere.png", "image did not load: .*corrupt.png",
                   "not local: https://cdn.jsdelivr.net", "widget placeholder text",
                   "0 of 1 widgets rendered", "cell error output"):
        assert re.search(reason, out.stdout), (reason, out.stdout)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_book_builds_and_renders():
    """The CI's book check: build (reusing the jupyter-cache), then look at it in Chromium."""
    build = subprocess.run([REPO / "scripts/build-book"], cwd=REPO, capture_output=True,
                           text=True)
    assert build.returncode == 0, build.stdout[-6000:] + build.stderr[-6000:]
    assert "chapter execution times" in build.stdout
    check = subprocess.run([REPO / "scripts/check-book"], cwd=REPO, capture_output=True,
                           text=True, timeout=600)
    assert check.returncode == 0, check.stdout + check.stderr
    seen = re.findall(r"^ok\s+chapters/\S+\s+\((\d+) images loaded, (\d+) widgets rendered",
                      check.stdout, re.M)
    assert seen and max(int(i) for i, _ in seen) >= 1 and max(int(w) for _, w in seen) >= 1, \
        f"no chapter showed a figure and a widget:\n{check.stdout}"
    chapters = sorted((BOOK / "_build/html/chapters").glob("*.html"))   # those in _toc.yml
    assert chapters
    for chapter in chapters:
        shot = BOOK / "_build/screenshots" / f"chapters-{chapter.stem}.png"
        assert shot.is_file() and shot.stat().st_size > 10_000, f"no screenshot {shot}"
