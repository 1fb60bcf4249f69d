"""The built book as a reader gets it: served from a sub-path on loopback, opened in Chromium.

Shared by scripts/check-book (look at every page) and scripts/book-pdf (print every page).
Stdlib only, so it runs with any python3.

The server serves HTML_DIR under PREFIX (as a host serves a published site from /vmexit/),
answers anything outside PREFIX with 404, and a missing page under it with the site's 404.html
(status 404), as static hosts do. It keeps a log of every request and its status, so a
caller sees failed requests that no page script reports. An INJECT text is put before
</body> of every HTML page it serves (the files on disk stay untouched).
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

PREFIX = "/vmexit/"


class BookHandler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, prefix: str, inject: bytes, **kwargs):
        self.prefix, self.inject = prefix, inject
        super().__init__(*args, **kwargs)

    def do_GET(self):
        path = unquote(urlsplit(self.path).path)
        if not path.startswith(self.prefix):
            return self.send_error(404, "outside the site's prefix")
        file = Path(self.directory, path[len(self.prefix):])
        if file.is_dir():
            file = file / "index.html"
        status = 200
        if not file.is_file():
            file, status = Path(self.directory, "404.html"), 404
            if not file.is_file():
                return self.send_error(404)
        if file.suffix != ".html":
            return super().do_GET()
        body = file.read_bytes().replace(b"</body>", self.inject + b"</body>", 1)
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def translate_path(self, path):
        path = unquote(urlsplit(path).path)
        return super().translate_path("/" + path[len(self.prefix):])

    def log_request(self, code="-", size="-"):
        self.server.log.append((self.path, int(code) if str(code).isdigit() else 0))

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(root: Path, *, prefix: str = PREFIX, inject: str = ""):
    """Serve ROOT under http://127.0.0.1:PORT/PREFIX; yields (base URL, request log)."""
    handler = functools.partial(BookHandler, directory=str(root), prefix=prefix,
                                inject=inject.encode())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.log = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{prefix}", server.log
    finally:
        server.shutdown()
        server.server_close()


def chromium(url: str, profile: str, *extra: str, timeout: float = 120) -> \
        subprocess.CompletedProcess:
    """Headless Chromium on URL, cut off from every host but loopback (flags: DESIGN.md)."""
    browser = shutil.which("chromium") or sys.exit("chromium is not installed: run scripts/setup")
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", f"--user-data-dir={profile}",
           # offline: nothing resolves but this server, so a CDN reference cannot pass
           "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
           "--virtual-time-budget=5000", *extra, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def pages(root: Path) -> list[Path]:
    """Every page of the site but the assets (_static/, _sources/ ...) and the index redirect."""
    return sorted(rel for rel in (p.relative_to(root) for p in root.rglob("*.html"))
                  if not any(part.startswith("_") for part in rel.parts)
                  and rel != Path("index.html"))


def reading_order(root: Path) -> list[str]:
    """The book's pages in the order of its table of contents: the root page, then the links
    of the navigation sidebar of the root page (as Jupyter Book's theme draws it)."""
    index = (root / "index.html").read_text()
    first = re.search(r'url=([^"\']+\.html)', index)          # the redirect to the root page
    first = first.group(1) if first else "index.html"
    text = (root / first).read_text()
    nav = re.search(r'<nav class="[^"]*\bbd-docs-nav\b.*?</nav>', text, re.S)
    links = re.findall(r'<a class="reference internal" href="([^"#]+)', nav.group(0)) if nav \
        else []
    return list(dict.fromkeys([first] + links))
