"""The web app's files, served by the edge at ``/`` from the package directory ``edge/web/``.

``GET /`` (and ``/index.html``) is ``index.html``; any other file is served
by its exact name from that directory and nowhere else: a name is one path
segment of ``[A-Za-z0-9._-]`` starting with a letter or digit (no ``/``, no
``..``, no percent-encoding), with a known extension (the content type), of
a regular file inside the directory (a symlink out of it is refused).
Anything else is not found; there is no directory listing.

The files are package data (pyproject.toml), so a wheel install serves them
as an editable checkout does. Responses carry ``Cache-Control: no-cache``
and an ``ETag``: a browser revalidates on every load (a new build is seen at
once) and gets ``304`` with no body when nothing changed. Files are re-read
when their size or modification time changes.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

from websockets.datastructures import Headers
from websockets.http11 import Response

WEB_DIR = Path(__file__).parent / "web"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".map": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".woff2": "font/woff2",
}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True, slots=True)
class _File:
    stamp: tuple[int, int]  # (size, mtime_ns) when read
    data: bytes
    etag: str
    ctype: str


class StaticFiles:
    def __init__(self, root: Path = WEB_DIR) -> None:
        self.root = root.resolve()
        self._cache: dict[str, _File] = {}  # only names of files that exist: bounded by the directory

    def response(self, path: str, if_none_match: str | None = None) -> Response | None:
        """The file at URL ``path`` (no query), or None if there is none."""
        name = "index.html" if path in ("/", "/index.html") else path[1:]
        f = self._load(name)
        if f is None:
            return None
        status, body = (HTTPStatus.NOT_MODIFIED, b"") if if_none_match == f.etag else (HTTPStatus.OK, f.data)
        headers = Headers([
            ("Content-Type", f.ctype), ("Content-Length", str(len(body))), ("Cache-Control", "no-cache"),
            ("ETag", f.etag), ("X-Content-Type-Options", "nosniff"),
            # /?token=JWT: the token must not leave in a Referer header.
            ("Referrer-Policy", "no-referrer"), ("Connection", "close"),
        ])
        return Response(status.value, status.phrase, headers, body)

    def _load(self, name: str) -> _File | None:
        if _NAME.fullmatch(name) is None:
            return None
        ctype = CONTENT_TYPES.get(Path(name).suffix)
        if ctype is None:
            return None
        p = self.root / name
        try:
            st = p.stat()
            stamp = (st.st_size, st.st_mtime_ns)
            cached = self._cache.get(name)
            if cached is not None and cached.stamp == stamp:
                return cached
            if not p.is_file() or p.resolve().parent != self.root:
                return None
            data = p.read_bytes()
        except OSError:
            self._cache.pop(name, None)
            return None
        f = self._cache[name] = _File(stamp, data, f'"{hashlib.sha256(data).hexdigest()[:32]}"', ctype)
        return f


__all__ = ["CONTENT_TYPES", "StaticFiles", "WEB_DIR"]
