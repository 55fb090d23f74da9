"""A file's view in the browse page, as the paper's Figure 4, in a real browser: the spectrogram
VGGish heard, as wide as the song at the page's scale, one row per instrument shown, a click at
x % of the width plays from x % of the song; in a static site for the files asked for (`--view`,
and a note for the others), under `--serve` for any tagged file, computed when it is opened from
the cache and the model (the serving rule guards it as it guards the audio)."""

import re
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from builders import SR, music
from test_browse import opened
from typer.testing import CliRunner

from instag.cli import app
from instag.jobs.views import FileViews, Spool
from instag.jobs.views import served as served_views
from instag.outputs.browse import build_site
from instag.outputs.browse.serve import server
from instag.outputs.readback import checked_documents
from instag.tagging.options import TagOptions

DOCS_ASSETS = Path(__file__).resolve().parents[3] / "docs" / "assets"


def song(seconds: float) -> np.ndarray:
    """Three sections a spectrogram tells apart: tones, then noise, then both."""
    third = seconds / 3
    tones, noise = music(third, 1), 0.1 * np.random.default_rng(2).standard_normal(
        (round(third * SR), 2)).astype(np.float32)
    return np.concatenate([tones, noise[: len(tones)], tones + noise[: len(tones)]])


@pytest.fixture
def tagged(run_tag, tmp_path):
    """A 30 s song (with its artist and title), an 8 s one and a broken file, tagged to CSV (no
    timeline: the views recompute it from the cache) with every instrument present."""
    from mutagen.flac import FLAC

    lib = tmp_path / "lib"
    lib.mkdir()
    sf.write(lib / "a song.flac", song(30), SR)
    sf.write(lib / "short.flac", music(8, 3), SR)
    for name, title in (("a song.flac", "Tones, Noise, Both"), ("short.flac", "A Short One")):
        tags = FLAC(lib / name)
        tags.update({"artist": "The Stand-ins", "title": title, "album": "Tests"})
        tags.save()
    (lib / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    assert run_tag(lib, "--out", tmp_path / "tags.csv", "--threshold", "0").exit_code == 1
    return tmp_path / "tags.csv"


@pytest.fixture
def figure_options(scoring_model, standin_vggish, standin_pca, tmp_path):
    """What `browse`/`plot` take to recompute a view: run_tag's model, VGGish, PCA, cache."""
    return ["--model", str(scoring_model), "--vggish", str(standin_vggish), "--pca",
            str(standin_pca), "--cache", str(tmp_path / "cache.sqlite")]


def view_of(page, name: str) -> dict:
    """Open the view of the row showing `name`; the drawn view's geometry."""
    page.get_by_role("button", name=re.compile(f"view .*{re.escape(name)}")).click()
    page.wait_for_function("() => document.querySelector('#view-stack canvas.spectrogram')",
                           timeout=20_000)
    return page.evaluate("""() => {
        const stack = document.getElementById('view-stack');
        const spec = stack.querySelector('canvas.spectrogram').getBoundingClientRect();
        return {scale: +stack.dataset.scale, duration: +stack.dataset.duration,
                width: stack.getBoundingClientRect().width, spectrogram: spec.width,
                rows: [...stack.querySelectorAll('canvas.attention')]
                      .map(c => c.dataset.instrument)};
    }""")


def test_a_static_site_shows_the_views_asked_for_and_says_how_to_get_the_others(
        browser, tagged, figure_options, tmp_path):
    result = CliRunner().invoke(app, ["browse", str(tagged), "--out", str(tmp_path / "site"),
                                      "--view", str(tmp_path / "lib" / "a song.flac"),
                                      *figure_options])
    assert result.exit_code == 0, result.output
    page = opened(browser, (tmp_path / "site" / "index.html").as_uri())
    view = view_of(page, "Tones, Noise, Both")
    assert view["duration"] == pytest.approx(30, abs=0.01)
    assert view["width"] == pytest.approx(view["duration"] * view["scale"], abs=1)
    # the spectrogram spans the song's whole instances (a last partial 0.96 s is not heard)
    assert view["spectrogram"] == pytest.approx(view["width"], abs=0.96 * view["scale"] + 1)
    assert sorted(view["rows"]) == ["c0", "c1", "c2"]  # every instrument is present
    page.get_by_role("button", name=re.compile("view .*A Short One")).click()
    page.wait_for_function("() => /no view of this file/.test("
                           "document.getElementById('view-note').textContent)")
    assert "--view FILE" in page.text_content("#view-note")


def test_a_click_at_x_percent_of_the_width_plays_from_x_percent_of_the_song(
        browser, tagged, figure_options, tmp_path):
    CliRunner().invoke(app, ["browse", str(tagged), "--out", str(tmp_path / "site"), "--view",
                             str(tmp_path / "lib" / "a song.flac"), *figure_options])
    page = opened(browser, (tmp_path / "site" / "index.html").as_uri())
    view = view_of(page, "Tones, Noise, Both")
    box = page.locator("#view-stack").bounding_box()
    for share in (0.25, 0.6):
        page.mouse.click(box["x"] + share * view["width"], box["y"] + 150)
        page.wait_for_function(f"() => Math.abs(document.getElementById('player').currentTime"
                               f" - {share * view['duration']}) < 0.2 && "
                               "!document.getElementById('playhead').hidden")
        at = page.evaluate("() => { const p = document.getElementById('player'); p.pause();"
                           " return p.currentTime; }")  # the playhead stops where this is
        page.wait_for_timeout(100)
        head = page.locator("#playhead").bounding_box()["x"] - box["x"]
        assert head == pytest.approx(at * view["scale"], abs=2)


@pytest.fixture
def served(tagged, scoring_model, standin_vggish, standin_pca, tmp_path):
    """`browse --serve` as the command makes it: the documents spooled as the site is made."""
    spool = Spool()
    site = build_site(spool.through(checked_documents(tagged)), tmp_path / "site", str(tagged))
    views = FileViews(TagOptions(model=scoring_model, vggish=str(standin_vggish),
                                 pca=standin_pca, cache=tmp_path / "cache.sqlite"))
    asked: list[int] = []

    def view_of(number: int) -> dict:
        asked.append(number)
        return served_views(views, spool)(number)

    httpd = server(site.folder, site.audio, view_of=view_of)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.url, site, asked
    httpd.shutdown()
    httpd.server_close()
    spool.close()


def test_served_any_tagged_files_view_is_computed_when_opened_and_remembered(browser, served):
    url, site, asked = served
    page = opened(browser, url)
    view = view_of(page, "A Short One")
    assert view["duration"] == pytest.approx(8, abs=0.01) and len(view["rows"]) == 3
    number = next(i for i, f in enumerate(site.audio) if f and f.path.name == "short.flac")
    body = urllib.request.urlopen(f"{url}view/{number}.js").read()
    assert body.startswith(f"INSTAG.view([{number},".encode())
    assert asked == [number]  # the second ask was answered from memory


def test_served_a_view_is_given_only_of_what_the_serving_rule_would_send(served, tmp_path):
    url, site, asked = served
    broken = next(i for i, f in enumerate(site.audio) if f is None)
    for number in (str(broken), "99", "-1", "0x1", "1/../../etc/passwd"):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{url}view/{number}.js")
        assert e.value.code == 404, number
    changed = next(i for i, f in enumerate(site.audio) if f and f.path.name == "a song.flac")
    sf.write(tmp_path / "lib" / "a song.flac", music(5, 9), SR)  # not the audio tagged any more
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{url}view/{changed}.js")
    assert e.value.code == 404 and asked == []


def test_a_view_that_cannot_be_made_says_why_and_is_not_remembered(served, tmp_path):
    url, site, asked = served
    number = next(i for i, f in enumerate(site.audio) if f and f.path.name == "short.flac")
    (tmp_path / "cache.sqlite").rename(tmp_path / "elsewhere.sqlite")
    body = urllib.request.urlopen(f"{url}view/{number}.js").read().decode()
    assert '"error":' in body and "cache" in body
    (tmp_path / "elsewhere.sqlite").rename(tmp_path / "cache.sqlite")
    body = urllib.request.urlopen(f"{url}view/{number}.js").read().decode()
    assert '"spectrogram":' in body and asked == [number, number]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_screenshots_of_the_file_view_for_the_guide(browser, tagged, figure_options, tmp_path,
                                                   scheme):
    """docs/assets/browse-view-{light,dark}.png: the 30 s song's view, playing from 12 s."""
    CliRunner().invoke(app, ["browse", str(tagged), "--out", str(tmp_path / "site"), "--view",
                             str(tmp_path / "lib" / "a song.flac"), *figure_options])
    page = browser.new_page(viewport={"width": 1100, "height": 520}, color_scheme=scheme)
    page.goto((tmp_path / "site" / "index.html").as_uri())
    page.wait_for_function("window.INSTAG && window.INSTAG.loaded")
    page.select_option("#status", "ok")
    view = view_of(page, "Tones, Noise, Both")
    box = page.locator("#view-stack").bounding_box()
    page.mouse.click(box["x"] + 12 / view["duration"] * view["width"], box["y"] + 60)
    page.wait_for_function("() => document.getElementById('player').currentTime >= 12")
    page.evaluate("() => document.getElementById('player').pause()")
    DOCS_ASSETS.mkdir(exist_ok=True)
    page.screenshot(path=str(DOCS_ASSETS / f"browse-view-{scheme}.png"))


def browse(tagged, out, options, *views) -> object:
    args = [a for v in views for a in ("--view", str(v))]
    return CliRunner().invoke(app, ["browse", str(tagged), "--out", str(out), *args, *options])


def test_a_view_of_a_file_the_output_does_not_tag_is_refused_and_the_site_kept(
        tagged, figure_options, tmp_path):
    site = tmp_path / "site"
    assert browse(tagged, site, figure_options).exit_code == 0
    before = sorted(p.name for p in (site / "data").iterdir())
    for wrong, said in ((tmp_path / "lib" / "nothere.flac", "is not in it"),
                        (tmp_path / "lib" / "broken.wav", "did not tag (error)")):
        result = browse(tagged, site, figure_options, tmp_path / "lib" / "a song.flac", wrong)
        assert result.exit_code == 2, result.output
        assert f"--view {wrong}: the output {said}" in result.output
        assert sorted(p.name for p in (site / "data").iterdir()) == before


def test_a_view_that_cannot_be_made_costs_only_itself(tagged, figure_options, tmp_path):
    song, short = tmp_path / "lib" / "a song.flac", tmp_path / "lib" / "short.flac"
    moved = short.rename(tmp_path / "short.flac")  # its view cannot be made where it was
    result = browse(tagged, tmp_path / "site", figure_options, song, short)
    assert result.exit_code == 1, result.output
    assert f"--view {short}: not included" in result.output
    assert "tag it again where it is now" in result.output  # browse has no --audio to offer
    assert "3 files (1 failed, 1 view)" in result.output
    assert len(list((tmp_path / "site" / "data").glob("view-*.js"))) == 1
    assert moved.exists()


def test_the_keyboard_in_a_files_view(browser, tagged, figure_options, tmp_path):
    """Space plays the file just opened, ← → scroll its view, ↓ opens the next, Esc closes."""
    browse(tagged, tmp_path / "site", figure_options, tmp_path / "lib" / "a song.flac",
           tmp_path / "lib" / "short.flac")
    page = opened(browser, (tmp_path / "site" / "index.html").as_uri())
    page.set_viewport_size({"width": 700, "height": 800})  # 30 s at 20 px/s: wider than this
    view_of(page, "Tones, Noise, Both")
    page.keyboard.press(" ")
    page.wait_for_function("() => !document.getElementById('player').paused")
    assert "Tones, Noise, Both" in page.inner_text("#playing")
    page.keyboard.press(" ")
    page.wait_for_function("() => document.getElementById('player').paused")
    page.keyboard.press("ArrowRight")
    assert page.eval_on_selector("#view-scroll", "s => s.scrollLeft") > 0
    assert "Tones, Noise, Both" in page.inner_text("#view-title")  # still the same file
    page.keyboard.press("ArrowDown")  # broken.wav, which failed: the view stays
    page.keyboard.press("ArrowDown")
    page.wait_for_function("() => /A Short One/.test("
                           "document.getElementById('view-title').textContent)")
    page.keyboard.press("Escape")
    assert page.eval_on_selector("#view", "v => v.hidden")


def test_a_person_scrolling_the_view_while_it_plays_keeps_where_they_scrolled(
        browser, tagged, figure_options, tmp_path):
    browse(tagged, tmp_path / "site", figure_options, tmp_path / "lib" / "a song.flac")
    page = opened(browser, (tmp_path / "site" / "index.html").as_uri())
    page.set_viewport_size({"width": 700, "height": 800})
    view_of(page, "Tones, Noise, Both")
    page.keyboard.press(" ")
    page.wait_for_function("() => document.getElementById('player').currentTime > 0.3")
    end = page.eval_on_selector("#view-scroll", "s => { s.scrollLeft = s.scrollWidth; "
                                                "return s.scrollLeft; }")
    assert end > 60  # the playhead, near 1 s (20 px), is out of sight to the left
    page.wait_for_timeout(1000)
    assert page.eval_on_selector("#view-scroll", "s => s.scrollLeft") == end
