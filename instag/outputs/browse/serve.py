"""`instag browse --serve`: the site and the audio it lists, on 127.0.0.1, to this page only.

The serving rule. Every request must name this server as the browser reached it (`Host`:
127.0.0.1 or localhost and the port bound: a web page that rebinds a DNS name to 127.0.0.1
is refused) and start with the random token of the printed URL (`/<token>/`), else 403: other
local users cannot browse someone's library. Under it, the site's own files by their fixed names,
and the audio by number (`/<token>/audio/N`), with HTTP Range so that seeking works. A number is
sent only if its document says the file was tagged (`ok`), it is still a regular file (never a
FIFO, device or folder; opened without blocking), its size and mtime are the document's (or
what instag's own tag writes made of them: `same_audio`), its name says an audio type and its
content is audio instag reads (probed once). The same rule guards a file's view
(`/<token>/view/N.js`: its spectrogram and attention, computed from the file and the cache
when asked). Anything else is 404, never the bytes. Audio goes
out as its audio type, everything with `nosniff` and a strict Content-Security-Policy; a bad
request or a dropped connection costs its client a status code, never the server a traceback.
"""

from __future__ import annotations

import errno
import hmac
import os
import re
import secrets
import stat
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from instag.common.errors import InstagError
from instag.outputs.browse import Listed
from instag.outputs.browse.view import view_script

BLOCK = 1 << 16
RANGE = re.compile(r"bytes=([0-9]{0,18})-([0-9]{0,18})")  # one range, numbers bounded: else ignored
SITE_FILES = re.compile(
    r"(index\.html|(app|rows|view)\.js|style\.css|favicon\.svg"
    r"|data/(meta|chunk-[0-9]{4,9}|view-[0-9]{1,9})\.js)")
VIEWS_KEPT = 16  # file views remembered (a 5-minute song's is ~0.5 MB)
SITE_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
              ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
AUDIO_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg",
               ".ogg": "audio/ogg", ".oga": "audio/ogg", ".opus": "audio/ogg",
               ".m4a": "audio/mp4", ".mp4": "audio/mp4", ".aac": "audio/aac",
               ".webm": "audio/webm", ".weba": "audio/webm", ".aif": "audio/aiff",
               ".aiff": "audio/aiff", ".aifc": "audio/aiff", ".wma": "audio/x-ms-wma",
               ".mka": "audio/x-matroska", ".alac": "audio/mp4", ".ape": "audio/ape",
               ".wv": "audio/wavpack"}
# the page needs no inline script or style (app.js sets styles through the CSSOM)
POLICY = ("default-src 'self'; media-src 'self'; object-src 'none'; frame-ancestors 'none'; "
          "base-uri 'none'; form-action 'none'")
SameAudio = Callable[[Path, tuple[int, int], tuple[int, int]], bool]  # path, was, now


class Library:
    """The audio a site lists, by number, and the rule that says which of it may be sent."""

    def __init__(self, listed: list[Listed | None], same_audio: SameAudio | None) -> None:
        self.listed = list(listed)
        self.same_audio = same_audio
        # number: the version of its file (device, inode, size, mtime) found fit to send
        self.checked: dict[int, tuple[int, int, int, int]] = {}
        self.lock = threading.Lock()
        # one probe at a time: the decoder points descriptor 2 elsewhere while it opens a file
        self.probing = threading.Lock()

    def open(self, number: str) -> tuple[int, os.stat_result, str] | None:
        """(descriptor, its stat, its type) of audio file `number`, or None: not to be sent."""
        if not (number.isascii() and number.isdigit()) or len(number) > 18 or \
                int(number) >= len(self.listed):
            return None
        listed = self.listed[int(number)]
        if listed is None or None in (listed.size, listed.mtime_ns):
            return None  # not tagged, or no record of the file that was
        kind = AUDIO_TYPES.get(listed.path.suffix.lower())
        if kind is None:
            return None  # sent as its name's type: only audio types
        fd = _open_regular(listed.path)
        if fd is None:
            return None
        st = os.fstat(fd)
        if not self._checked(int(number), listed, st):
            os.close(fd)
            return None
        return fd, st, kind

    def _checked(self, number: int, listed: Listed, st: os.stat_result) -> bool:
        """Whether the file (as `st` found it) is the audio tagged, and audio instag reads:
        asked once per version of the file, remembered by number."""
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        with self.lock:
            if self.checked.get(number) == key:
                return True
        was, now = (listed.size, listed.mtime_ns), (st.st_size, st.st_mtime_ns)
        if now != was and (self.same_audio is None or
                           not self.same_audio(listed.path, was, now)):
            return False
        with self.probing:
            try:
                again = os.stat(listed.path)  # still the file opened: the probe goes by name
            except OSError:
                return False
            if (again.st_dev, again.st_ino, again.st_size, again.st_mtime_ns) != key or \
                    not _probe(listed.path):
                return False
        with self.lock:
            self.checked[number] = key
        return True


class Views:
    """File views computed on demand (`view_of(number)`: the page's data of the file the
    output lists as `number`) for files the serving rule would send (`Library.open`), one at a
    time (two cores serve the page too); the last VIEWS_KEPT are remembered and answered at
    once, even while another is computed. A view that cannot be
    made says why in the page and is not remembered (the cache may hold it a minute later)."""

    def __init__(self, library: Library, view_of: Callable[[int], dict]) -> None:
        self.library = library
        self.view_of = view_of
        self.kept: OrderedDict[int, bytes] = OrderedDict()
        self.lock = threading.Lock()  # `kept`: held for a moment, never while computing
        self.computing = threading.Lock()

    def script(self, number: str) -> bytes | None:
        """The view of `number` as the page loads it; None: not to be sent."""
        found = self.library.open(number)
        if found is None:
            return None
        os.close(found[0])
        n = int(number)
        if (script := self._remembered(n)) is not None:
            return script
        with self.computing:
            if (script := self._remembered(n)) is not None:  # made while this one waited
                return script
            try:
                script = view_script(n, self.view_of(n)).encode("ascii")
            except InstagError as e:
                return view_script(n, {"error": e.message, "fix": e.fix}).encode("ascii")
        with self.lock:
            self.kept[n] = script
            while len(self.kept) > VIEWS_KEPT:
                self.kept.popitem(last=False)
        return script

    def _remembered(self, n: int) -> bytes | None:
        with self.lock:
            if n in self.kept:
                self.kept.move_to_end(n)
            return self.kept.get(n)


def _open_regular(path: Path) -> int | None:
    """A descriptor on `path` if it is a regular file. Anything else is not even opened (a
    device's open may act), and one that becomes a FIFO in between cannot hang us (O_NONBLOCK):
    it is refused by what the descriptor holds."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def _probe(path: Path) -> bool:
    """instag's own decoder opens the file and reads its first frame."""
    from instag.features.decode import open_audio

    try:
        _, blocks = open_audio(path)
        first = blocks(1)
        found = next(first, None) is not None
        first.close()
    except Exception:  # noqa: BLE001 - whatever a decoder says of it, it is not served
        return False
    return found


def byte_span(header: str | None, size: int) -> tuple[int, int, bool] | None:
    """(first, last, partial) of a Range header for `size` bytes, None if unsatisfiable. Not
    one well-formed range of bounded numbers (several, junk, 5,000 digits): the whole file,
    as RFC 9110 lets a server ignore a Range."""
    ranged = RANGE.fullmatch(header.strip()) if header else None
    if not ranged or not (ranged[1] or ranged[2]):
        return 0, size - 1, False
    if not ranged[1]:  # the last N bytes
        tail = int(ranged[2])
        return (max(size - tail, 0), size - 1, True) if tail else None
    first = int(ranged[1])
    last = min(int(ranged[2]), size - 1) if ranged[2] else size - 1
    if ranged[2] and int(ranged[2]) < first:
        return 0, size - 1, False  # not a range at all
    return (first, last, True) if first < size else None


class _Server(ThreadingHTTPServer):
    token: str
    library: Library
    views: Views | None
    site: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{self.token}/"

    def handle_error(self, request, client_address) -> None:
        """A request gone wrong costs that request only: one line, never a traceback."""
        error = sys.exc_info()[1]
        if not isinstance(error, (ConnectionError, TimeoutError)):
            print(f"instag browse: a request failed ({type(error).__name__}: {error})",
                  file=sys.stderr)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 60  # a connection that says nothing for a minute is closed

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass  # a quiet server: the page is the interface

    def end_headers(self) -> None:
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", POLICY)
        self.send_header("Referrer-Policy", "no-referrer")
        super().end_headers()

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._answer(body=True)

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        port = self.server.server_address[1]
        hosts = self.headers.get_all("Host") or []
        if len(hosts) != 1 or hosts[0].lower() not in (f"127.0.0.1:{port}", f"localhost:{port}"):
            self.send_error(HTTPStatus.MISDIRECTED_REQUEST, "not this server's name")
            return
        _, token, *rest = self.path.split("?", 1)[0].split("#", 1)[0].split("/", 2) + ["", ""]
        if not hmac.compare_digest(token.encode("latin-1"), self.server.token.encode()):
            self.send_error(HTTPStatus.FORBIDDEN, "the address printed by instag browse only")
        elif not self.path.startswith(f"/{token}/"):
            self.send_response(HTTPStatus.MOVED_PERMANENTLY)
            self.send_header("Location", f"/{token}/")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif rest[0].startswith("audio/"):
            self._audio(rest[0].removeprefix("audio/"), body)
        elif rest[0].startswith("view/") and rest[0].endswith(".js"):
            self._view(rest[0].removeprefix("view/").removesuffix(".js"), body)
        elif SITE_FILES.fullmatch(name := rest[0] or "index.html"):
            self._site(name, body)
        else:
            self.send_error(HTTPStatus.NOT_FOUND)

    def _site(self, name: str, body: bool) -> None:
        fd = _open_regular(self.server.site / name)
        if fd is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        with open(fd, "rb") as f:
            size = os.fstat(fd).st_size
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", SITE_TYPES[Path(name).suffix])
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if body:
                self._send(f, size)

    def _view(self, number: str, body: bool) -> None:
        views = self.server.views
        script = views.script(number) if views is not None else None
        if script is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", SITE_TYPES[".js"])
        self.send_header("Content-Length", str(len(script)))
        self.end_headers()
        if body:
            self.wfile.write(script)

    def _audio(self, number: str, body: bool) -> None:
        found = self.server.library.open(number)
        if found is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        fd, st, kind = found
        with open(fd, "rb") as f:
            span = byte_span(self.headers.get("Range"), st.st_size)
            if span is None:
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{st.st_size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            first, last, partial_ = span
            self.send_response(HTTPStatus.PARTIAL_CONTENT if partial_ else HTTPStatus.OK)
            if partial_:
                self.send_header("Content-Range", f"bytes {first}-{last}/{st.st_size}")
            self.send_header("Content-Type", kind)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(last - first + 1))
            self.end_headers()
            if body:
                f.seek(first)
                self._send(f, last - first + 1)

    def _send(self, f, left: int) -> None:
        try:
            while left > 0 and (block := f.read(min(BLOCK, left))):
                self.wfile.write(block)
                left -= len(block)
        except OSError:  # the browser seeks elsewhere and drops this request, or a disk error
            self.close_connection = True


def server(site: Path, audio: list[Listed | None], port: int = 0,
           same_audio: SameAudio | None = None,
           view_of: Callable[[int], dict] | None = None) -> _Server:
    """A server for `site` and its listed `audio` on 127.0.0.1 (port 0: a free one); its `url`
    (with the token) is the one address it answers. `same_audio(path, (size, mtime_ns) as
    documented, as now)` says whether a file that changed since is still the audio tagged.
    `view_of(number)`: the file view of a listed file, computed when the page asks (`Views`)."""
    if not 0 <= port <= 65535:
        raise InstagError(f"--port {port}: not a port number", "give 1 to 65535, or 0 for a "
                          "free one")
    try:
        httpd = _Server(("127.0.0.1", port), _Handler)
    except OSError as e:
        taken = " (another program is using it)" if e.errno == errno.EADDRINUSE else ""
        raise InstagError(f"--port {port}: cannot listen on it: {e.strerror or e}{taken}",
                          "give another port, or 0 for a free one") from None
    httpd.token = secrets.token_urlsafe(24)
    httpd.library = Library(audio, same_audio)
    httpd.views = Views(httpd.library, view_of) if view_of is not None else None
    httpd.site = Path(site)
    return httpd
