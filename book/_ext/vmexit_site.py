"""Where the site is published: one setting, `html_baseurl`, for the sitemap and the 404 page.

The 404 page is served for any missing path, at any depth, so its links must be absolute: its
URL prefix is the path of `html_baseurl`. A publisher sets VMEXIT_BASEURL (for example
https://example.github.io/vmexit/) when building; without it, `html_baseurl` of _config.yml.
"""
import os
from urllib.parse import urlsplit


def config_inited(app, config):
    base = os.environ.get("VMEXIT_BASEURL") or config.html_baseurl
    config.html_baseurl = base if base.endswith("/") else base + "/"
    config.notfound_urls_prefix = urlsplit(config.html_baseurl).path


def setup(app):
    app.connect("config-inited", config_inited, priority=100)   # before the extensions read it
    return {"parallel_read_safe": True, "parallel_write_safe": True}
