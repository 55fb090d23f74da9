"""`instag browse`: a static page over any instag output, tested in a real browser (Debian's
Chromium driven by Playwright; no browser is downloaded): filtering, segments that play from
where they start, names inserted as text (instrument names too, `__proto__` included), a
100,000-file library, and `--serve`, which serves the listed audio with Range, to the page
under its token and its strict Content-Security-Policy (its rules: test_serve.py)."""

import json
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from instag.cli import app
from instag.outputs.browse import MARKER, build_site
from instag.outputs.browse.serve import server

ARTEFACTS = Path(__file__).parents[2] / "artefacts"  # screenshots, for a person to look at
INJECTION = "<img src=x onerror=alert(1)>.mp3"


def doc(path, instruments: dict, duration=30.0, status="ok", reason=None) -> dict:
    """A file's document as instag's outputs hold it: {instrument: (probability, present,
    segments)}; the size and mtime of the file as it is now, where it is."""
    st = os.stat(path) if os.path.exists(path) else None
    return {"path": str(path), "status": status, "reason": reason, "duration_s": duration,
            "size": st and st.st_size, "mtime_ns": st and st.st_mtime_ns,
            "instruments": [n for n, (_, on, _) in instruments.items() if on],
            "segments": {n: segs for n, (_, on, segs) in instruments.items() if on},
            "bags": [] if status != "ok" else [{
                "start_s": 0, "end_s": duration, "present": [],
                "probabilities": {n: p for n, (p, _, _) in instruments.items()},
                "segments": {}}]}


def wav(path: Path, seconds: float = 30.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * 8000)) / 8000
    sf.write(path, (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 8000)
    return path


@pytest.fixture
def library(tmp_path):
    """Three songs (one with a saxophone from 12.5 s), a failed file, the injection name, a
    WMA (not playable in a browser), and a name that is not UTF-8; their output as JSONL."""
    lib = tmp_path / "lib"
    sax = wav(lib / "jazz" / "sax song.wav")
    docs = [doc(sax, {"saxophone": (0.91, True, [[12.5, 15.38]]), "piano": (0.7, True,
                                                                           [[0.0, 4.8]])}),
            doc(wav(lib / "rock.wav"), {"guitar": (0.88, True, [[1.92, 9.6]]),
                                        "saxophone": (0.2, False, [])}),
            doc(wav(lib / "quiet.wav"), {"piano": (0.62, True, [[3.84, 7.68]]),
                                         "saxophone": (0.55, False, [])}),
            doc(lib / "broken.mp3", {}, None, "error", "not an audio file"),
            doc(lib / INJECTION, {"voice": (0.8, True, [[0.0, 2.0]])}),
            doc(lib / "old.wma", {"violin": (0.9, True, [[1.0, 3.0]])})]
    raw = os.fsencode(lib) + b"/caf\xe9.wav"  # Latin-1 bytes: not UTF-8
    os.rename(wav(lib / "cafe.wav"), raw)
    docs.append(doc(str(lib) + "/caf\\xe9.wav", {"piano": (0.8, True, [[0.0, 1.0]])}))
    (lib / INJECTION).write_bytes(b"")
    out = tmp_path / "tags.jsonl"
    out.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return out


def opened(browser, url: str, dialogs: list | None = None):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.on("dialog", lambda d: (dialogs.append(d.message) if dialogs is not None else None,
                                 d.dismiss()))
    page.goto(url)
    page.wait_for_function("window.INSTAG && window.INSTAG.loaded", timeout=30_000)
    return page


def visible_paths(page) -> list[str]:
    return page.eval_on_selector_all(".row .path", "els => els.map(e => e.textContent)")


def site_of(library, tmp_path) -> Path:
    out = CliRunner().invoke(app, ["browse", str(library), "--out", str(tmp_path / "site")])
    assert out.exit_code == 0, out.output
    return tmp_path / "site"


def test_filtering_by_instrument_shows_the_files_that_have_it(browser, library, tmp_path):
    page = opened(browser, (site_of(library, tmp_path) / "index.html").as_uri())
    assert len(visible_paths(page)) == 7
    page.click(".chip[data-instrument=saxophone]")
    page.wait_for_function("document.querySelectorAll('.row').length === 1")
    assert [Path(p).name for p in visible_paths(page)] == ["sax song.wav"]
    # by probability instead of as tagged: quiet.wav's 0.55 too
    page.eval_on_selector("#minp", "e => { e.value = '0.5'; e.dispatchEvent(new Event('input')) }")
    page.wait_for_function("document.querySelectorAll('.row').length === 2")
    assert sorted(Path(p).name for p in visible_paths(page)) == ["quiet.wav", "sax song.wav"]
    assert "saxophone 2" in page.inner_text("#instruments")  # counted as the filters show


def test_failed_files_show_with_their_reasons_and_nothing_to_play_or_view(browser, library,
                                                                          tmp_path):
    page = opened(browser, (site_of(library, tmp_path) / "index.html").as_uri())
    page.select_option("#status", "failed")
    page.wait_for_function("document.querySelectorAll('.row').length === 1")
    assert "error: not an audio file" in page.inner_text(".row")
    assert page.locator(".row button").count() == 0  # neither ▶ nor view
    page.keyboard.press("ArrowDown")  # the keyboard does not play it either
    assert "not tagged, so not played" in page.inner_text("#playing")
    assert page.eval_on_selector("#player", "a => a.getAttribute('src')") is None


def test_clicking_a_segment_plays_the_song_from_its_start(browser, library, tmp_path):
    site = site_of(library, tmp_path)
    page = opened(browser, (site / "index.html").as_uri())
    page.click(".chip[data-instrument=saxophone]")
    page.click(".seg[data-instrument=saxophone]")
    page.wait_for_function("document.getElementById('player').currentTime >= 12.4")
    src = page.eval_on_selector("#player", "a => a.src")
    assert src == (library.parent / "lib" / "jazz" / "sax song.wav").as_uri()
    assert abs(page.eval_on_selector("#player", "a => a.currentTime") - 12.5) < 0.6
    ARTEFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTEFACTS / "browse.png"))


def test_a_name_made_of_html_shows_as_text(browser, library, tmp_path):
    dialogs: list = []
    page = opened(browser, (site_of(library, tmp_path) / "index.html").as_uri(), dialogs)
    page.fill("#search", "onerror")
    page.dispatch_event("#search", "input")
    page.wait_for_function("document.querySelectorAll('.row').length === 1")
    assert Path(visible_paths(page)[0]).name == INJECTION
    assert page.eval_on_selector_all("main img", "els => els.length") == 0 and dialogs == []


OBJECT_KEYS = ["__proto__", "constructor", "toString", "hasOwnProperty"]


def test_instruments_named_like_javascript_object_keys_filter_like_any_other(browser, tmp_path):
    """An instrument is data: one named `__proto__` or `toString` has its chip, its count, its
    strips and its filter, and a file without it never seems to have it."""
    docs = [doc("/m/a.wav", {"__proto__": (0.9, True, [[0.0, 1.0]]),
                             "constructor": (0.8, True, [[1.0, 2.0]])}),
            doc("/m/b.wav", {"toString": (0.7, True, [[0.0, 1.0]]),
                             "hasOwnProperty": (0.6, True, [[2.0, 3.0]]),
                             "constructor": (0.3, False, [])}),
            doc("/m/c.wav", {"piano": (0.9, True, [[0.0, 1.0]])})]
    site = build_site(docs, tmp_path / "site", "by hand")
    page = opened(browser, (site.folder / "index.html").as_uri())
    page.set_default_timeout(5_000)
    chips = page.inner_text("#instruments")
    for name in [*OBJECT_KEYS, "piano"]:
        assert f"{name} 1" in chips
    assert "__proto__ 0.90" in page.inner_text(".row")  # a.wav's strip
    for name, files in [("__proto__", ["a.wav"]), ("constructor", ["a.wav"]),
                        ("toString", ["b.wav"]), ("hasOwnProperty", ["b.wav"])]:
        chip = f'.chip[data-instrument="{name}"]'
        page.click(chip)
        page.wait_for_function(f"document.querySelectorAll('.row').length === {len(files)}")
        assert [Path(p).name for p in visible_paths(page)] == files
        page.click(chip)  # off again
        page.wait_for_function("document.querySelectorAll('.row').length === 3")
    page.click('.chip[data-instrument="constructor"]')  # by probability: b.wav's 0.3 too
    page.eval_on_selector("#minp", "e => { e.value = '0.25'; e.dispatchEvent(new Event('input')) }")
    page.wait_for_function("document.querySelectorAll('.row').length === 2")
    assert sorted(Path(p).name for p in visible_paths(page)) == ["a.wav", "b.wav"]


def test_formats_a_browser_cannot_play_say_so(browser, library, tmp_path):
    page = opened(browser, (site_of(library, tmp_path) / "index.html").as_uri())
    page.fill("#search", "old.wma")
    page.dispatch_event("#search", "input")
    page.wait_for_function("document.querySelectorAll('.row').length === 1")
    assert "not playable in a browser" in page.inner_text(".row")


def test_a_name_that_is_not_utf8_is_linked_percent_encoded(library, tmp_path):
    site = site_of(library, tmp_path)
    chunk = (site / "data" / "chunk-0000.js").read_text()
    assert "caf%E9.wav" in chunk  # the file's own byte, not a replacement character


def test_a_site_is_written_beside_and_renamed_and_never_over_a_foreign_folder(library,
                                                                            tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    out = CliRunner().invoke(app, ["browse", str(library), "--out", str(foreign)])
    assert out.exit_code == 2 and "not an instag site" in out.output
    assert (foreign / "notes.txt").read_text() == "keep"
    site = site_of(library, tmp_path)
    (site / "data" / "chunk-0009.js").write_text("old")  # a part of a larger, earlier site
    site_of(library, tmp_path)  # again: replaces its own site, whole
    assert (site / MARKER).is_file() and not (site / "data" / "chunk-0009.js").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith((".site", ".instag."))] == []


@pytest.mark.parametrize("mine", ["notes.txt", "photos/me.jpg", "tags.jsonl",
                                  "favicon.svg/notes.txt", "index.html/notes.txt"])
def test_a_site_folder_holding_anything_browse_did_not_write_is_refused_untouched(
        library, tmp_path, mine):
    """A marker alone does not make a folder browse's: a user's file in it (or the command's
    own input, or a folder by a page's name) is never deleted by a re-run."""
    site = site_of(library, tmp_path)
    if (site / mine).parent.is_file():
        (site / mine).parent.unlink()
    (site / mine).parent.mkdir(parents=True, exist_ok=True)
    (site / mine).write_bytes(library.read_bytes() if mine == "tags.jsonl" else b"mine")
    before = (site / mine).read_bytes()
    source = site / "tags.jsonl" if mine == "tags.jsonl" else library
    out = CliRunner().invoke(app, ["browse", str(source), "--out", str(site)])
    assert out.exit_code == 2 and "not an instag site" in out.output, out.output
    assert (site / mine).read_bytes() == before


@pytest.mark.parametrize("name", ["view-\u0661\u0662.js", "chunk-\u0661\u0662\u0663\u0664.js",
                                  "view-99999999999999999999.js"])
def test_data_files_that_only_look_like_the_sites_make_it_a_foreign_folder(library, tmp_path,
                                                                          name):
    site = site_of(library, tmp_path)
    (site / "data" / name).write_text("mine")
    out = CliRunner().invoke(app, ["browse", str(library), "--out", str(site)])
    assert out.exit_code == 2 and "not an instag site" in out.output
    assert (site / "data" / name).read_text() == "mine"


def test_a_folder_with_a_forged_marker_is_not_a_site(library, tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / MARKER).touch()
    (fake / "song.wav").write_bytes(b"RIFF")
    out = CliRunner().invoke(app, ["browse", str(library), "--out", str(fake)])
    assert out.exit_code == 2 and (fake / "song.wav").read_bytes() == b"RIFF"


@pytest.mark.slow
@pytest.mark.browser
def test_a_library_of_100000_files_shows_its_first_rows_within_5_s_and_filters_within_1_s(
        browser, tmp_path):
    """100,000 files, synthetic (two in three with artist, title and album): from navigation
    to the first rows drawn within 5 s, every part loaded within 30 s, and a filter (an
    instrument chip, text in the search box, a sort) redrawn within 1 s each; what the site
    weighs and each step took is printed."""
    rng = np.random.default_rng(0)
    names = ["piano", "guitar", "voice", "drums", "saxophone", "violin", "bass", "synthesizer"]

    def docs():
        for i in range(100_000):
            chosen = rng.choice(len(names), 3, replace=False)
            d = doc(f"/music/artist {i % 997}/album {i % 89}/{i:06d} song.flac",
                    {names[c]: (float(rng.random()), bool(k < 2),
                                [[float(k), float(k) + 2.88]]) for k, c in enumerate(chosen)},
                    duration=float(rng.uniform(60, 400)))
            yield d | ({"artist": f"Artist {i % 997}", "title": f"Song {i}",
                        "album": f"Album {i % 89}"} if i % 3 else {})

    site = build_site(docs(), tmp_path / "site", "synthetic")
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    start = time.monotonic()
    page.goto((site.folder / "index.html").as_uri(), wait_until="commit")  # not the load event
    page.wait_for_selector(".row", timeout=5_000)
    first = time.monotonic() - start
    page.wait_for_function("window.INSTAG && window.INSTAG.loaded", timeout=30_000)
    page.wait_for_function("document.getElementById('summary').textContent"
                           ".startsWith('100000 of 100000')")
    loaded = time.monotonic() - start
    took = {}
    for step, act in [("chip", lambda: page.click(".chip[data-instrument=violin]")),
                      ("search", lambda: page.fill("#search", "artist 5")),
                      ("sort", lambda: page.select_option("#sort", "artist"))]:
        before = page.inner_text("#summary"), page.inner_text("#spacer")
        start = time.monotonic()
        act()
        page.wait_for_function("([s, l]) => document.getElementById('summary').textContent !== s"
                               " || document.getElementById('spacer').innerText !== l", arg=before)
        took[step] = time.monotonic() - start
    assert 0 < page.eval_on_selector_all(".row", "els => els.length") < 60  # virtualised
    print(f"\n100k files: site {site.bytes / 1e6:.1f} MB; first rows {first:.2f} s, all loaded "
          f"{loaded:.2f} s; " + ", ".join(f"{k} {v:.2f} s" for k, v in took.items()))
    assert first < 5 and max(took.values()) < 1, took


@pytest.fixture
def served(library, tmp_path):
    site = build_site((json.loads(line) for line in library.read_text().splitlines()),
                      tmp_path / "site", str(library))
    httpd = server(site.folder, site.audio)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.url, site
    httpd.shutdown()
    httpd.server_close()


def test_served_the_page_plays_through_the_server(browser, served):
    """...under the server's Content-Security-Policy, which the page never violates."""
    url, site = served
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    said: list[str] = []
    page.on("console", lambda m: said.append(m.text))
    page.goto(url)
    # functions, not strings: the policy forbids eval, which a string would need
    page.wait_for_function("() => window.INSTAG && window.INSTAG.loaded", timeout=30_000)
    page.click(".chip[data-instrument=saxophone]")
    page.click(".seg[data-instrument=saxophone]")
    page.wait_for_function("() => document.getElementById('player').currentTime >= 12.4")
    assert page.eval_on_selector("#player", "a => a.src") == f"{url}audio/0"
    assert not [m for m in said if "Content Security Policy" in m], said
    assert not [m for m in said if "Failed to load" in m], said  # its icon too


def test_served_audio_answers_ranges_so_seeking_works(served):
    url, site = served
    whole = site.audio[0].path.read_bytes()
    with urllib.request.urlopen(urllib.request.Request(
            f"{url}audio/0", headers={"Range": "bytes=100-199"})) as r:
        assert r.status == 206 and r.read() == whole[100:200]
        assert r.headers["Content-Range"] == f"bytes 100-199/{len(whole)}"


@pytest.mark.parametrize("path", ["/audio/99", "/audio/-1", "/../tags.jsonl", "/%2e%2e/tags.jsonl",
                                  "/data/../../tags.jsonl", "/data/"])
def test_served_nothing_else_on_disk_is_reachable(served, path):
    url, _ = served
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url + path.removeprefix("/"))
    assert e.value.code == 404


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_library_tagged_with_the_standins_browses_from_any_output(run_tag, tmp_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")  # the parquet extra
    lib = tmp_path / "lib"
    for i in range(3):
        wav(lib / f"{i}.wav", 3.0)
    (lib / "bad.wav").write_bytes(b"RIFF0000WAVEjunk")
    tags = tmp_path / f"tags{suffix}"
    assert run_tag(lib, "--out", tags).exit_code == 1  # one file failed
    out = CliRunner().invoke(app, ["browse", str(tags), "--out", str(tmp_path / "site")])
    assert out.exit_code == 0, out.output
    assert "4 files (1 failed)" in out.output
    meta = (tmp_path / "site" / "data" / "meta.js").read_text()
    assert '"files":4,"failed":1' in meta


def test_serve_prints_its_address_and_ends_on_ctrl_c_in_one_line(library):
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "instag", "browse", str(library), "--serve"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("open http://127.0.0.1:"), line
        url = line.split()[1]
        with urllib.request.urlopen(url) as r:
            assert r.status == 200 and b"app.js" in r.read()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode in (0, 130) and "Traceback" not in err
