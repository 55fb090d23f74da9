"""`instag browse --serve` serves only what was tagged, only to the page it printed: a file the
document lists is sent only while it is the regular audio file that was tagged (or what
instag's own tag writes made of it), as audio, with nosniff; every request needs the printed
URL's token and this server's own Host; bad requests cost a status code, never the server.

One server, started as a user starts it, answers every test here: its document lists a real
song, then files a hostile or careless document could list."""

import http.client
import json
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from instag.cli import app
from instag.engines.local.cache import Cache
from instag.tagging.identity import FileKey

SONG, PASSWD, CHANGED, FIFO, HTML_PAGE, HTML_AUDIO, FAILED, REWRITTEN, HIDDEN, SECRET = range(10)


def wav(path: Path, seconds: float = 2.0) -> Path:
    t = np.arange(int(seconds * 8000)) / 8000
    sf.write(path, (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 8000)
    return path


def listed(path: Path, status: str = "ok", size: int | None = None,
           mtime_ns: int | None = None) -> dict:
    """A document as `instag tag` writes it, recording the file as it is now unless told."""
    st = os.stat(path) if path.exists() else None
    return {"path": str(path), "status": status, "reason": None, "duration_s": 2.0,
            "size": st.st_size if size is None else size,
            "mtime_ns": st.st_mtime_ns if mtime_ns is None else mtime_ns,
            "instruments": [], "segments": {},
            "bags": [{"start_s": 0, "end_s": 2.0, "present": [], "probabilities": {"piano": 0.1},
                      "segments": {}}]}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(the printed URL, the server's stderr file, the song's bytes)."""
    root = tmp_path_factory.mktemp("serve")
    lib = root / "lib"
    lib.mkdir()
    song = wav(lib / "song.wav")
    changed = wav(lib / "changed.wav")
    was = listed(changed)
    changed.write_bytes(changed.read_bytes() + b"\0" * 10)  # edited since it was tagged
    os.mkfifo(lib / "pipe.wav")
    (lib / "page.html").write_text("<script>fetch('/audio/1')</script>")
    wav(lib / "audio.wav").rename(lib / "audio.html")
    rewritten = wav(lib / "rewritten.wav")
    before = FileKey.of(rewritten)
    rewritten.write_bytes(rewritten.read_bytes() + b"\0" * 10)  # as instag's tag write did
    secret = lib / "key.wav"  # a name that says audio, over something else
    secret.write_text("-----BEGIN PRIVATE KEY-----\n" * 50)
    cache = root / "tags.sqlite"  # the default cache, in INSTAG_CACHE_DIR
    with Cache(cache) as c:
        c.rekey(before, FileKey.of(rewritten))
    docs = [listed(song), listed(Path("/etc/passwd")), was, listed(lib / "pipe.wav"),
            listed(lib / "page.html"), listed(lib / "audio.html"),
            listed(wav(lib / "failed.wav"), status="error"),
            listed(rewritten, size=before.size, mtime_ns=before.mtime_ns),
            listed(wav(lib / "hidden.wav"), mtime_ns=0), listed(secret)]
    tags = root / "tags.jsonl"
    tags.write_text("".join(json.dumps(d) + "\n" for d in docs))
    log = open(root / "stderr.txt", "w+")  # noqa: SIM115 - the server's, for its life
    proc = subprocess.Popen([sys.executable, "-m", "instag", "browse", str(tags), "--serve"],
                            stdout=subprocess.PIPE, stderr=log, text=True,
                            env={**os.environ, "INSTAG_CACHE_DIR": str(root)})
    try:
        line = proc.stdout.readline()
        assert line.startswith("open http://127.0.0.1:"), line
        yield line.split()[1], root / "stderr.txt", song.read_bytes()
    finally:
        proc.kill()
        proc.wait()
        log.close()


def get(url: str, path: str = "", headers: dict | None = None, timeout: float = 10):
    """(status, headers, body) of GET `path` under `url`, from 127.0.0.1 only."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection("127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path + path, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.headers, r.read()
    finally:
        conn.close()


def test_a_tagged_song_is_sent_as_audio_with_nosniff_and_ranges(served):
    url, _, song = served
    status, headers, body = get(url, f"audio/{SONG}")
    assert status == 200 and body == song
    assert headers["Content-Type"].startswith("audio/")
    assert headers["X-Content-Type-Options"] == "nosniff"
    status, headers, body = get(url, f"audio/{SONG}", {"Range": "bytes=100-199"})
    assert status == 206 and body == song[100:200]
    assert headers["Content-Range"] == f"bytes 100-199/{len(song)}"


def test_the_page_has_a_strict_content_security_policy(served):
    url, _, _ = served
    for name in ("", "app.js", "data/meta.js"):
        status, headers, _ = get(url, name)
        policy = headers["Content-Security-Policy"] or ""
        assert status == 200 and headers["X-Content-Type-Options"] == "nosniff"
        for rule in ("default-src 'self'", "object-src 'none'", "frame-ancestors 'none'",
                     "base-uri 'none'"):
            assert rule in policy
        assert "unsafe-inline" not in policy


@pytest.mark.parametrize("number", [PASSWD, CHANGED, FAILED, HIDDEN, SECRET],
                         ids=["etc-passwd", "changed-since-tagged", "not-tagged",
                              "mtime-not-the-documents", "not-audio-named-wav"])
def test_a_listed_file_that_is_not_the_audio_tagged_is_not_sent(served, number):
    url, _, _ = served
    status, _, body = get(url, f"audio/{number}")
    assert status in (403, 404)
    assert b"root:" not in body and b"RIFF" not in body and b"PRIVATE" not in body


def test_a_file_instags_own_tag_write_changed_is_still_sent(served):
    url, _, _ = served
    status, headers, body = get(url, f"audio/{REWRITTEN}")
    assert status == 200 and body.startswith(b"RIFF")


def test_a_listed_fifo_is_not_sent_and_does_not_hang_the_server(served):
    url, _, song = served
    status, _, _ = get(url, f"audio/{FIFO}", timeout=5)
    assert status in (403, 404)
    assert get(url, f"audio/{SONG}")[2] == song


@pytest.mark.parametrize("number", [HTML_PAGE, HTML_AUDIO], ids=["html", "audio-named-html"])
def test_a_listed_html_file_is_never_sent(served, number):
    url, _, _ = served
    status, headers, body = get(url, f"audio/{number}")
    assert status in (403, 404) and b"<script>" not in body and b"RIFF" not in body


@pytest.mark.parametrize("path", ["", "data/meta.js", f"audio/{SONG}"])
def test_without_the_token_every_request_is_forbidden(served, path):
    url, _, _ = served
    port = urllib.parse.urlsplit(url).port
    for base in (f"http://127.0.0.1:{port}/", f"http://127.0.0.1:{port}/not-the-token/"):
        assert get(base, path)[0] == 403


@pytest.mark.parametrize("host", ["evil.example:{port}", "127.0.0.1:1", "localhost",
                                  "127.0.0.1.evil.example:{port}"])
def test_another_host_name_is_refused(served, host):
    """A page on another site that rebinds its name to 127.0.0.1 sends its own Host."""
    url, _, _ = served
    port = urllib.parse.urlsplit(url).port
    status, _, body = get(url, f"audio/{SONG}", {"Host": host.format(port=port)})
    assert status in (403, 421) and b"RIFF" not in body
    assert get(url, "", {"Host": f"localhost:{port}"})[0] == 200


@pytest.mark.parametrize("spec", ["bytes=" + "9" * 5000 + "-", "bytes=-" + "9" * 5000,
                                  "bytes=0-1,5-9", "bytes=junk", "bytes=9-1", "pages=1-2",
                                  "bytes=99999999-"],
                         ids=["5000-digit-start", "5000-digit-suffix", "two-ranges", "junk",
                              "backwards", "other-unit", "past-the-end"])
def test_a_junk_range_gets_a_status_code_and_the_server_goes_on(served, spec):
    url, log, song = served
    seen = len(log.read_text())
    status, _, body = get(url, f"audio/{SONG}", {"Range": spec})
    assert status in (200, 206, 400, 416)
    assert status != 200 or body == song
    assert get(url, f"audio/{SONG}")[2] == song
    assert "Traceback" not in log.read_text()[seen:]


LONG = 65537  # one byte more than a line http.server reads (sent whole: nothing left unread)


@pytest.mark.parametrize("request_bytes", [
    b"GARBAGE / HTTP/1.1\r\n\r\n", b"GET / a b HTTP/1.1\r\n\r\n",
    b"GET /" + b"a" * (LONG - 5),
    b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 101,
    b"GET / HTTP/1.1\r\n" + b"Host: " + b"h" * (LONG - 6), b"GET / HTTP/1.1\r\nHo"],
    ids=["garbage", "bad-syntax", "long-line", "many-headers", "long-header", "reset"])
def test_a_bad_request_or_a_reset_costs_the_server_nothing(served, request_bytes):
    url, log, song = served
    seen = len(log.read_text())
    with socket.create_connection(("127.0.0.1", urllib.parse.urlsplit(url).port), 10) as s:
        s.sendall(request_bytes)
        if request_bytes.endswith(b"Ho"):  # the client goes away mid-request, with a reset
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            assert s.recv(64).startswith(b"HTTP/1.")  # a status line
    time.sleep(0.5)  # the server's thread for that connection has ended
    assert get(url, f"audio/{SONG}")[2] == song
    assert "Traceback" not in log.read_text()[seen:]


@pytest.mark.parametrize("port", ["taken", "70000", "-1"])
def test_a_port_taken_or_out_of_range_is_one_line_exit_2(tmp_path, port):
    tags = tmp_path / "tags.jsonl"
    tags.write_text(json.dumps(listed(wav(tmp_path / "song.wav"))) + "\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        if port == "taken":
            port = str(taken.getsockname()[1])
        out = CliRunner().invoke(app, ["browse", str(tags), "--serve", "--port", port])
    assert out.exit_code == 2, out.output
    assert "Traceback" not in out.output and f"--port {port}" in out.output


@pytest.mark.parametrize("number", ["\u00b2", "0\u00b2", "\u0661"], ids=["superscript", "mixed",
                                                                         "arabic-indic"])
def test_a_number_in_other_digits_is_a_404_not_a_dropped_connection(served, number):
    """`'²'.isdigit()` holds, `int('²')` fails: the server must not take it for a number."""
    url, log, _ = served
    for kind in ("audio", "view"):
        path = f"{kind}/{urllib.parse.quote(number)}" + (".js" if kind == "view" else "")
        assert get(url, path)[0] == 404, path
    assert "request failed" not in Path(log).read_text()


def test_a_remembered_view_is_answered_while_another_is_computed(tmp_path):
    """A slow view (an hour's file) holds no one back whose view is remembered."""
    import threading

    from instag.outputs.browse import Listed
    from instag.outputs.browse.serve import Library, Views

    songs = [wav(tmp_path / f"{i}.wav") for i in range(2)]
    library = Library([Listed(p, p.stat().st_size, p.stat().st_mtime_ns) for p in songs], None)
    slow, started = threading.Event(), threading.Event()

    def view_of(number: int) -> dict:
        if number == 1:
            started.set()
            slow.wait(10)
        return {"number": number}

    views = Views(library, view_of)
    assert b'"number":0' in views.script("0")
    worker = threading.Thread(target=views.script, args=("1",))
    worker.start()
    assert started.wait(10)
    took = time.monotonic()
    assert b'"number":0' in views.script("0")  # from memory, while 1 is computed
    assert time.monotonic() - took < 1
    slow.set()
    worker.join()
