"""The static files of the web view: plotly.js from the installed ``plotly`` package, and the
page script and style sheet (kept as Python strings so that they ship with the package)."""

from __future__ import annotations

import hashlib
import importlib.resources
from dataclasses import dataclass
from functools import cached_property
from importlib.resources.abc import Traversable

from prefleak.web.script import SCRIPT, STYLE


@dataclass(frozen=True)
class Asset:
    """One static file, read once on first use (plotly.js is about 5 MB)."""

    content_type: str
    source: Traversable | str

    @cached_property
    def body(self) -> bytes:
        if isinstance(self.source, str):
            return self.source.encode()
        return self.source.read_bytes()

    @cached_property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'


PLOTLY_JS = importlib.resources.files("plotly") / "package_data" / "plotly.min.js"

ASSETS: dict[str, Asset] = {
    "/static/plotly.min.js": Asset("text/javascript; charset=utf-8", PLOTLY_JS),
    "/static/web.js": Asset("text/javascript; charset=utf-8", SCRIPT),
    "/static/web.css": Asset("text/css; charset=utf-8", STYLE),
}
"""Path → file; the pages refer to these paths."""
