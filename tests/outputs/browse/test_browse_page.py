"""The browse page as people use it, in a real browser (Debian's Chromium through Playwright):
songs by artist, title and album (the path on hover, and where the tags are missing), sorting,
chips that count what the filters show (one per instrument of the model, tagged or not), one
colour per instrument, the keyboard, the system's dark mode, and a name for every control. The
screenshots of the guide are made here."""

from pathlib import Path

import pytest
from test_browse import doc, opened, wav

from instag.outputs.browse import build_site

pytestmark = pytest.mark.browser
DOCS_ASSETS = Path(__file__).resolve().parents[3] / "docs" / "assets"
SONGS = [  # file, song fields, duration, {instrument: (probability, present, segments)}
    ("a.wav", {"artist": "Nina Simone", "title": "Feeling Good", "album": "I Put a Spell"}, 20,
     {"voice": (0.93, True, [[0.0, 12.0]]), "piano": (0.81, True, [[2.0, 9.6]]),
      "saxophone": (0.40, False, [])}),
    ("b.wav", {"artist": "Miles Davis", "title": "So What", "album": "Kind of Blue"}, 30,
     {"trumpet": (0.88, True, [[5.0, 20.0]]), "piano": (0.64, True, [[0.0, 28.0]]),
      "saxophone": (0.77, True, [[12.0, 18.5]])}),
    ("c.wav", {"artist": "Arvo Pärt", "title": "Spiegel im Spiegel"}, 10,
     {"violin": (0.95, True, [[0.0, 10.0]]), "piano": (0.90, True, [[0.0, 10.0]]),
      "saxophone": (0.02, False, [])}),
    ("untagged.wav", {}, 25,
     {"guitar": (0.71, True, [[3.0, 8.0]]), "piano": (0.30, False, []),
      "saxophone": (0.60, False, [])}),
]
MODEL = ["guitar", "piano", "saxophone", "trumpet", "violin", "voice", "cello"]  # cello: nowhere


def documents(folder: Path, audio: bool = True) -> list[dict]:
    """SONGS as an output's documents, each scoring every instrument of MODEL."""
    docs = []
    for name, song, seconds, tagged in SONGS:
        path = wav(folder / name, seconds) if audio else folder / name
        scored = {n: tagged.get(n, (0.01, False, [])) for n in MODEL}
        docs.append(doc(path, scored, float(seconds)) | song)
    return docs


@pytest.fixture
def page(browser, tmp_path):
    site = build_site(documents(tmp_path / "music"), tmp_path / "site", "by hand")
    page = opened(browser, (site.folder / "index.html").as_uri())
    page.set_default_timeout(5_000)
    return page


def names(page) -> list[str]:
    return page.eval_on_selector_all(".row .name", "els => els.map(e => e.textContent)")


def settle(page) -> None:
    """Until the page has redrawn (it redraws on the next animation frame)."""
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def test_songs_show_as_artist_title_album_with_the_path_on_hover_and_paths_without_tags(page):
    assert names(page)[:3] == ["Nina Simone – Feeling Good (I Put a Spell)",
                               "Miles Davis – So What (Kind of Blue)",
                               "Arvo Pärt – Spiegel im Spiegel"]
    hover = page.eval_on_selector_all(".row .name", "els => els.map(e => e.title)")
    assert [Path(p).name for p in hover] == ["a.wav", "b.wav", "c.wav", "untagged.wav"]
    assert names(page)[3] == hover[3]  # no tags: the path itself


def files(page) -> list[str]:
    """The files shown, in order, by the path each row shows on hover."""
    return page.eval_on_selector_all(".row .name", "els => els.map(e => e.title.split('/')"
                                     ".pop())")


@pytest.mark.parametrize("sort, order", [
    ("artist", ["c.wav", "b.wav", "a.wav", "untagged.wav"]),  # without tags: last
    ("album", ["a.wav", "b.wav", "c.wav", "untagged.wav"]),  # c has no album
    ("title", ["a.wav", "b.wav", "c.wav", "untagged.wav"]),
    ("duration", ["b.wav", "untagged.wav", "a.wav", "c.wav"]),  # longest first
    ("prob", ["c.wav", "a.wav", "b.wav", "untagged.wav"]),  # 0.95, 0.93, 0.88, 0.71: any
])
def test_sorting_by_artist_album_title_duration_and_probability(page, sort, order):
    page.select_option("#sort", sort)
    settle(page)
    assert files(page) == order


def test_sorting_by_probability_follows_the_selected_instrument(page):
    page.select_option("#sort", "prob")
    page.click(".chip[data-instrument=piano]")
    page.eval_on_selector("#minp", "e => { e.value = '0.2'; e.dispatchEvent(new Event('input')) }")
    settle(page)
    assert files(page) == ["c.wav", "a.wav", "b.wav", "untagged.wav"]  # .90 .81 .64 .30
    page.click(".chip[data-instrument=saxophone]")  # both: files with both, by the better
    settle(page)
    assert files(page) == ["a.wav", "b.wav", "untagged.wav"]  # .81, .77 (saxophone), .60


def chips(page) -> dict[str, int]:
    text = page.eval_on_selector_all(".chip", "els => els.map(e => e.textContent)")
    return {t.rsplit(" ", 1)[0]: int(t.rsplit(" ", 1)[1]) for t in text}


def test_every_instrument_of_the_model_has_a_chip_counting_what_the_filters_show(page):
    assert chips(page) == {"piano": 3, "saxophone": 1, "guitar": 1, "trumpet": 1, "violin": 1,
                           "voice": 1, "cello": 0}  # cello: tagged nowhere, still a chip
    page.fill("#search", "miles")  # the search box: by artist too
    settle(page)
    assert chips(page)["piano"] == 1 and chips(page)["voice"] == 0
    page.fill("#search", "")
    page.eval_on_selector("#minp", "e => { e.value = '0.5'; e.dispatchEvent(new Event('input')) }")
    settle(page)
    assert chips(page)["saxophone"] == 2  # 0.77 and 0.60: by probability, not as tagged
    page.select_option("#status", "failed")
    settle(page)
    assert set(chips(page).values()) == {0}
    page.select_option("#status", "all")
    page.click(".chip[data-instrument=saxophone]")  # the chips count the files shown
    settle(page)
    assert chips(page)["saxophone"] == 2 and chips(page)["trumpet"] == 1
    assert chips(page)["guitar"] == 1 and len(names(page)) == 2


def test_each_instrument_has_one_colour_in_its_chip_its_label_and_its_segments(page):
    colour = """n => [...document.querySelectorAll(`.chip[data-instrument="${n}"],
        .seg[data-instrument="${n}"]`)].map(e => getComputedStyle(e).getPropertyValue('--c')
        .trim())"""
    seen = {n: set(page.evaluate(colour, n)) for n in ["piano", "voice", "trumpet", "cello"]}
    assert all(len(c) == 1 for c in seen.values()), seen
    assert len({c for cs in seen.values() for c in cs}) == 4  # four instruments, four colours
    seg = page.eval_on_selector('.seg[data-instrument="piano"]',
                                "e => getComputedStyle(e).backgroundColor")
    chip = page.eval_on_selector('.chip[data-instrument="piano"]',
                                 "e => getComputedStyle(e).borderLeftColor")
    assert seg == chip


def test_an_instrument_has_the_colour_in_the_page_that_plot_draws_it_in(page, monkeypatch,
                                                                        tmp_path):
    """Both take it from `outputs.colours`, by the instrument's place in the model."""
    pytest.importorskip("matplotlib")
    import matplotlib.colors
    import matplotlib.pyplot as plt
    import numpy as np

    from instag.features.logmel import Spectrogram
    from instag.outputs.plot import plot_file

    chip = page.eval_on_selector('.chip[data-instrument="piano"]',
                                 "e => getComputedStyle(e).getPropertyValue('--c').trim()")
    doc = documents(tmp_path / "music")[1]  # piano present, among others
    doc["bags"][0] |= {"present": doc["instruments"], "timeline": {
        "start_s": [0.0, 0.96], "attention": {n: [0.5, 0.5] for n in MODEL}}}
    drawn = []
    monkeypatch.setattr(plt, "close", drawn.append)
    plot_file(doc, tmp_path / "f.png", Spectrogram(np.zeros((10, 64)), 0.1))
    axes = [a for a in drawn[0].axes if "piano" in a.get_ylabel()]
    bar = axes[0].patches[0].get_facecolor()[:3]
    assert matplotlib.colors.to_hex(bar) == chip


def playing(page) -> str:
    return Path(page.eval_on_selector("#player", "a => a.src")).name


def test_space_plays_and_pauses_and_arrows_go_to_the_next_and_previous_file(page):
    page.focus("#list")
    page.keyboard.press("ArrowDown")
    page.wait_for_function("() => !document.getElementById('player').paused")
    assert playing(page) == "a.wav" and "Feeling Good" in page.inner_text(".row.current")
    page.keyboard.press("ArrowDown")
    page.wait_for_function("() => document.getElementById('player').src.endsWith('b.wav')"
                           " && document.getElementById('player').currentTime > 0")
    page.keyboard.press(" ")
    page.wait_for_function("() => document.getElementById('player').paused")
    page.keyboard.press(" ")
    page.wait_for_function("() => !document.getElementById('player').paused")
    page.keyboard.press("ArrowUp")
    page.wait_for_function("() => document.getElementById('player').src.endsWith('a.wav')")
    assert page.get_attribute(".row.current", "aria-current") == "true"


def test_keys_typed_in_the_search_box_or_a_select_stay_there(page):
    page.focus("#search")
    page.keyboard.type("so what")
    page.keyboard.press("ArrowDown")
    settle(page)
    assert page.input_value("#search") == "so what" and playing(page) == ""  # none playing
    assert names(page) == ["Miles Davis – So What (Kind of Blue)"]
    page.focus("#status")
    page.keyboard.press("ArrowDown")  # the select's own next option
    settle(page)
    assert page.input_value("#status") == "ok" and playing(page) == ""


def background(page) -> tuple[int, ...]:
    css = page.eval_on_selector("body", "e => getComputedStyle(e).backgroundColor")
    return tuple(int(x) for x in css[css.index("(") + 1:-1].split(",")[:3])


def test_the_page_follows_the_systems_dark_mode(page):
    page.emulate_media(color_scheme="light")
    assert sum(background(page)) > 600
    page.emulate_media(color_scheme="dark")
    assert sum(background(page)) < 150
    text = page.eval_on_selector(".name", "e => getComputedStyle(e).color")
    assert sum(int(x) for x in text[4:-1].split(",")) > 500  # light text on it


def test_every_control_has_an_accessible_name(page):
    """As Chromium's accessibility tree gives them to a screen reader."""
    session = page.context.new_cdp_session(page)
    nodes = session.send("Accessibility.getFullAXTree")["nodes"]
    controls = [n for n in nodes if not n.get("ignored") and n.get("role", {}).get("value") in
                {"button", "textbox", "searchbox", "combobox", "slider", "checkbox", "link",
                 "ListBox", "listbox", "main", "group"}]
    unnamed = [n["role"]["value"] for n in controls if not n.get("name", {}).get("value")]
    roles = {n["role"]["value"] for n in controls}
    assert {"button", "searchbox", "combobox", "slider", "main"} <= roles
    assert unnamed == [], unnamed
    assert page.get_by_role("button", name="play Miles Davis – So What (Kind of Blue)").count()
    assert page.get_by_role("slider", name="probability").count() == 1


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_screenshots_of_the_page_for_the_guide(browser, tmp_path, scheme):
    """docs/assets/browse-{light,dark}.png: the same data on every run (paths that do not
    depend on the test's folder), the saxophone chip on."""
    site = build_site(documents(Path("/home/ana/Music/Jazz"), audio=False), tmp_path / "site",
                      "by hand")
    page = browser.new_page(viewport={"width": 1100, "height": 470}, color_scheme=scheme)
    page.goto((site.folder / "index.html").as_uri())
    page.wait_for_function("window.INSTAG && window.INSTAG.loaded")
    page.select_option("#sort", "artist")
    page.click(".chip[data-instrument=piano]")
    settle(page)
    DOCS_ASSETS.mkdir(exist_ok=True)
    page.screenshot(path=str(DOCS_ASSETS / f"browse-{scheme}.png"))
    assert len(names(page)) == 3
