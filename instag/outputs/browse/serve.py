"""`instag browse --serve`: the site on 127.0.0.1 only, and the audio files the output lists,
each by its number in the output (`/audio/N`), with HTTP Range so that seeking works. Nothing
else on disk can be asked for: the site's own files are served from the site folder by name
(no `..`, no other folder), audio only through the list."""

from __future__ import annotations

import mimetypes
import re
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

RANGE = re.compile(r"bytes=(\d*)-(\d*)$")
BLOCK = 1 << 16


class _Handler(SimpleHTTPRequestHandler):
    audio: list[Path] = []

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass  # a quiet server: the page is the interface

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?", 1)[0]
        if path.startswith("/audio/"):
            self._audio(path.removeprefix("/audio/"))
        elif ".." in path or "\\" in path:
            self.send_error(HTTPStatus.NOT_FOUND)
        else:
            super().do_GET()

    def list_directory(self, path):  # no folder listings
        self.send_error(HTTPStatus.NOT_FOUND)

    def _audio(self, number: str) -> None:
        if not number.isdigit() or int(number) >= len(self.audio):
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        file = self.audio[int(number)]
        try:
            f = open(file, "rb")  # noqa: SIM115 - closed below, after streaming
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        with f:
            size = file.stat().st_size
            start, end = 0, size - 1
            ranged = RANGE.match(self.headers.get("Range", ""))
            if ranged and (ranged[1] or ranged[2]):
                if ranged[1]:
                    start = int(ranged[1])
                    end = min(int(ranged[2]), size - 1) if ranged[2] else size - 1
                else:  # the last N bytes
                    start = max(size - int(ranged[2]), 0)
                if start > end or start >= size:
                    self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.end_headers()
                    return
                self.send_response(HTTPStatus.PARTIAL_CONTENT)
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            else:
                self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", mimetypes.guess_type(file.name)[0] or
                             "application/octet-stream")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start + 1))
            self.end_headers()
            f.seek(start)
            left = end - start + 1
            try:
                while left > 0 and (block := f.read(min(BLOCK, left))):
                    self.wfile.write(block)
                    left -= len(block)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the browser seeks elsewhere and drops this request


def server(site: Path, audio: list[Path], port: int = 0) -> ThreadingHTTPServer:
    """A server for `site` on 127.0.0.1 (port 0: a free one; `server_address` says which)."""
    handler = type("Handler", (_Handler,), {"audio": list(audio)})
    return ThreadingHTTPServer(("127.0.0.1", port), partial(handler, directory=str(site)))
