"""The beets plugin: `beet instag`, typed fields that queries understand, a real media field,
the import stage, and writes made the beets way (after an import has copied or moved)."""

import hashlib
import os
import threading
from pathlib import Path

import mutagen
import pytest
import soundfile as sf
from builders import SR, music

beets_helper = pytest.importorskip("beets.test.helper")
from beets.library import Item  # noqa: E402

import instag  # noqa: E402
from instag.tagging.bags import Bag  # noqa: E402
from instag.tagging.results import BagResult, FileResult  # noqa: E402


class Beets(beets_helper.PluginMixin, beets_helper.ImportHelper):
    plugin = "instag"
    preload_plugin = False  # loaded once instag's environment is set


class BeetsOnDisk(Beets):
    db_on_disk = True  # an in-memory library is one per thread: a threaded import needs a file


def set_up(helper, monkeypatch, scoring_model, standin_vggish, standin_pca):
    monkeypatch.setenv("INSTAG_MODEL", str(scoring_model))
    monkeypatch.setenv("INSTAG_VGGISH", str(standin_vggish))
    monkeypatch.setenv("INSTAG_PCA", str(standin_pca))
    helper.setup_beets()
    return helper


@pytest.fixture
def beets(monkeypatch, scoring_model, standin_vggish, standin_pca):
    helper = set_up(Beets(), monkeypatch, scoring_model, standin_vggish, standin_pca)
    yield helper
    helper.teardown_beets()


@pytest.fixture
def threaded_beets(monkeypatch, scoring_model, standin_vggish, standin_pca):
    """beets as configured by default: `threaded: yes` (its test helper turns it off)."""
    helper = set_up(BeetsOnDisk(), monkeypatch, scoring_model, standin_vggish, standin_pca)
    helper.config["threaded"] = True
    yield helper
    helper.teardown_beets()


class FakeSession:
    """instag's session replaced (the fast tier): every file gets piano and voice."""

    entered = 0

    def __init__(self, options=None, reporter=None):
        self.options = options

    def __enter__(self):
        FakeSession.entered += 1
        return self

    def __exit__(self, *exc):
        pass

    def tag(self, paths):
        for p in paths:
            bag = BagResult(Bag(0, 1), {"piano": 0.9, "voice": 0.8, "c2": 0.1}, None, None,
                            ["piano", "voice"], {})
            yield FileResult(Path(p), instag.Status.OK, bags=[bag])


@pytest.fixture
def fake_instag(monkeypatch):
    FakeSession.entered = 0
    monkeypatch.setattr(instag, "TagSession", FakeSession, raising=False)
    return FakeSession


def add_items(helper, tmp_path, names):
    items = []
    for i, name in enumerate(names):
        path = tmp_path / name
        if name.startswith("corrupt"):
            path.write_bytes(b"fLaC" + bytes(4000))
            item = Item(path=os.fsencode(path), title=name)
        else:
            sf.write(path, music(4 + 3 * i, i), SR)
            item = Item.from_path(os.fsencode(path))
            item.title = name
        helper.lib.add(item)
        items.append(item)
    return items


def md5(path) -> str:
    return hashlib.md5(Path(os.fsdecode(path)).read_bytes()).hexdigest()


def album_to_import(helper, name="album", n=2):
    folder = helper.import_path / name
    folder.mkdir()
    for i in range(n):
        sf.write(folder / f"{i:02d}.flac", music(3, i), SR)
    return {p: md5(p) for p in sorted(folder.iterdir())}


def in_file(item) -> list[str]:
    return list(mutagen.File(os.fsdecode(item.path)).get("INSTRUMENTS", []))


# -- the real tier: instag's own models (stand-ins) ---------------------------------------------
def test_beet_instag_stores_instruments_and_typed_scores_that_queries_use(beets, tmp_path):
    beets.load_plugins("instag")
    add_items(beets, tmp_path, ["a.flac", "b.flac", "c.flac", "corrupt.flac"])
    beets.run_command("instag")
    items = {Path(os.fsdecode(i.path)).name: i for i in beets.lib.items()}
    assert "instruments" not in items["corrupt.flac"]  # logged and skipped
    tagged = [items[n] for n in ("a.flac", "b.flac", "c.flac")]
    for item in tagged:
        assert isinstance(item["instag_c0"], float)
        assert set(item["instruments"]) <= {"c0", "c1", "c2"}
    by_query = {Path(os.fsdecode(i.path)).name for i in beets.lib.items("instag_c0:0.5..")}
    assert by_query == {Path(os.fsdecode(i.path)).name for i in tagged if i["instag_c0"] >= 0.5}
    for name in ("c0", "c1", "c2"):
        with_it = {Path(os.fsdecode(i.path)).name for i in beets.lib.items(f"instruments:{name}")}
        assert with_it == {Path(os.fsdecode(i.path)).name for i in tagged
                           if name in i["instruments"]}


def test_the_score_fields_are_declared_before_any_model_runs(beets):
    beets.load_plugins("instag")
    from beets import plugins

    assert {k for k in plugins.types(Item) if k.startswith("instag_")} == \
        {"instag_c0", "instag_c1", "instag_c2"}


def test_write_records_the_new_mtime_so_beets_sees_no_outside_change(beets, tmp_path):
    beets.config["instag"]["threshold"] = 0.0  # every instrument present
    beets.load_plugins("instag")
    (item,) = add_items(beets, tmp_path, ["a.flac"])
    beets.run_command("instag", "-w")
    item.load()
    assert in_file(item) == ["c0", "c1", "c2"]
    assert item.mtime == item.current_mtime()


def test_force_retags_through_instags_cache_and_recompute_decodes_again(beets, tmp_path,
                                                                        monkeypatch):
    from instag.engines.local.pool import DecodePool

    beets.load_plugins("instag")
    add_items(beets, tmp_path, ["a.flac"])
    beets.run_command("instag", "-W")  # a write by beets is not instag's: it would re-decode
    submitted = []
    submit = DecodePool.submit
    monkeypatch.setattr(DecodePool, "submit",
                        lambda self, i, p: (submitted.append(p), submit(self, i, p))[1])
    beets.run_command("instag", "-f", "-W")
    assert submitted == []  # the cache knew it
    beets.run_command("instag", "--recompute", "-W")
    assert len(submitted) == 1


def test_a_threaded_import_tags_every_item_and_the_next_import_decodes_nothing(
        threaded_beets, monkeypatch):
    """beets' own default: `threaded: yes` runs the plugin's stage in a pipeline thread, not
    the one that opened instag's session at import_begin (beets' test helper turns threading
    off: turned back on here). Copied as beets does by default, so the sources stay as they
    were and a second import of them is served by instag's cache."""
    from beets import plugins

    from instag.engines.local.pool import DecodePool

    beets = threaded_beets
    beets.config["instag"].set({"auto": True, "write": True})
    beets.load_plugins("instag")
    album_to_import(beets, "one", n=3)
    album_to_import(beets, "two", n=2)
    submitted, threads = [], set()  # the files instag decodes, and the threads that ask
    submit = DecodePool.submit

    def decoding(self, i, p):
        submitted.append(p)
        threads.add(threading.current_thread())
        return submit(self, i, p)

    monkeypatch.setattr(DecodePool, "submit", decoding)
    cache = Path(os.environ["INSTAG_CACHE_DIR"])

    def import_all():
        beets.setup_importer(autotag=False, copy=True, duplicate_action="keep")
        beets.importer.run()
        plugins.send("import", lib=beets.lib, paths=[])  # what `beet import` sends at its end
        return list(beets.lib.items())

    items = import_all()
    assert len(items) == 5 and len(submitted) == 5
    assert threading.main_thread() not in threads  # tagged in beets' pipeline, truly threaded
    for item in items:
        assert set(item["instruments"]) <= {"c0", "c1", "c2"} and "instag_c0" in item
        assert in_file(item) == item["instruments"]
    assert not list(cache.glob("*.damaged-*"))
    items = import_all()
    assert len(items) == 10 and len(submitted) == 5  # every file from the cache
    assert all("instag_c0" in item for item in items)
    assert not list(cache.glob("*.damaged-*"))


# -- the fast tier: instag replaced -------------------------------------------------------------
def test_write_defaults_to_beets_import_write(beets, tmp_path, fake_instag):
    beets.config["import"]["write"] = True
    beets.load_plugins("instag")
    a, b = add_items(beets, tmp_path, ["a.flac", "b.flac"])
    beets.run_command("instag", "-W", "a.flac")
    assert in_file(a) == []
    beets.run_command("instag", "b.flac")
    assert in_file(b) == ["piano", "voice"]


def test_write_on_items_already_tagged_decodes_nothing(beets, tmp_path, fake_instag):
    beets.config["import"]["write"] = False
    beets.load_plugins("instag")
    (item,) = add_items(beets, tmp_path, ["a.flac"])
    beets.run_command("instag")  # stored, not written: import.write is off
    assert fake_instag.entered == 1 and in_file(item) == []
    beets.run_command("instag", "-w")
    item.load()
    assert fake_instag.entered == 1 and in_file(item) == ["piano", "voice"]


def test_instruments_is_a_media_field_that_beet_update_reads_from_the_file(beets, tmp_path,
                                                                            fake_instag):
    from instag.outputs.filetags import write_tags
    from instag.tagging.tagwriting import TagWriting

    beets.load_plugins("instag")
    (item,) = add_items(beets, tmp_path, ["a.flac"])
    write_tags(Path(os.fsdecode(item.path)), {"INSTRUMENTS": ["cello", "harp"]}, TagWriting())
    beets.run_command("update")
    item.load()
    assert item["instruments"] == ["cello", "harp"]
    item["instruments"] = ["organ"]
    item.store()
    beets.run_command("write", "-f")  # beets compares only its own fields without -f
    assert in_file(item) == ["organ"]


@pytest.mark.parametrize("mode", ["copy", "move"])
def test_an_import_writes_the_library_files_never_the_source(beets, fake_instag, mode):
    beets.config["instag"].set({"auto": True, "write": True})
    beets.load_plugins("instag")
    source = album_to_import(beets)
    beets.setup_importer(autotag=False, copy=mode == "copy", move=mode == "move")
    beets.importer.run()
    items = list(beets.lib.items())
    assert len(items) == 2
    for item in items:
        assert not os.fsdecode(item.path).startswith(str(beets.import_path))
        assert in_file(item) == ["piano", "voice"] and item["instruments"] == ["piano", "voice"]
    if mode == "copy":
        assert {p: md5(p) for p in source} == source  # the user's originals, byte for byte
    else:
        assert not any(p.exists() for p in source)


def test_an_import_follows_import_write_and_writes_after_the_copy(beets, fake_instag):
    beets.config["import"]["write"] = True
    beets.config["instag"]["auto"] = True
    beets.load_plugins("instag")
    source = album_to_import(beets)
    beets.setup_importer(autotag=False, copy=True, write=True)
    beets.importer.run()
    assert all(in_file(item) == ["piano", "voice"] for item in beets.lib.items())
    assert {p: md5(p) for p in source} == source


def test_one_instag_session_serves_a_whole_import(beets, fake_instag):
    beets.config["instag"]["auto"] = True
    beets.load_plugins("instag")
    album_to_import(beets, "one")
    album_to_import(beets, "two")
    from beets import plugins

    beets.setup_importer(autotag=False, copy=False)
    beets.importer.run()
    plugins.send("import", lib=beets.lib, paths=[])
    assert len(list(beets.lib.albums())) == 2 and fake_instag.entered == 1


def test_a_locked_cache_is_logged_and_the_import_goes_on(beets, monkeypatch, tmp_path):
    beets.config["instag"]["auto"] = True
    beets.load_plugins("instag")
    album_to_import(beets)

    def locked(self):
        raise instag.InstagError("tags.sqlite: another `instag tag` run (pid 1) is using this "
                                 "cache", "wait for it")

    monkeypatch.setattr(instag.TagSession, "__enter__", locked)
    beets.setup_importer(autotag=False, copy=False)
    beets.importer.run()
    items = list(beets.lib.items())
    assert len(items) == 2 and not any(it.get("instruments") for it in items)


@pytest.mark.parametrize("id3v23", [False, True])
def test_beets_own_mp3_writes_read_back_as_several_values(beets, tmp_path, fake_instag, id3v23):
    from builders import instruments_in

    beets.config["id3v23"] = id3v23
    beets.load_plugins("instag")
    path = tmp_path / "a.mp3"
    sf.write(path, music(2, 1), SR, format="MP3")
    item = Item.from_path(os.fsencode(path))
    beets.lib.add(item)
    beets.run_command("instag", "-w")
    assert mutagen.File(path).tags.version[:2] == ((2, 3) if id3v23 else (2, 4))
    assert instruments_in(path) == ["piano", "voice"]
    assert Item.from_path(os.fsencode(path))["instruments"] == ["piano", "voice"]


def test_instag_train_labels_items_by_queries_and_leaves_the_rest_unlabelled(beets, tmp_path,
                                                                            monkeypatch):
    seen = {}

    def teach(labels, out, options, recipe, openmic=None, folds=None, force=False):
        seen.update(labels=labels, out=out, epochs=recipe.epochs, folds=folds)
        per_class = {n: {"f1": 0.9, "ap": 0.95, "n_positive": 1} for n in labels.instruments}
        return type("Taught", (), {"failed": [], "metrics": {"per_class": per_class}})()

    monkeypatch.setattr(instag, "teach", teach, raising=False)
    beets.load_plugins("instag")
    add_items(beets, tmp_path, ["kazoo1.flac", "kazoo2.flac", "choir.flac", "other.flac"])
    beets.run_command("instag-train", "--epochs", "7", "--folds", "3", str(tmp_path / "run"),
                      "kazoo=title:kazoo", "not-kazoo=title:choir", "choir=title:choir")
    labels = seen["labels"]
    said = {Path(f).name: dict(zip(labels.instruments, zip(v, o, strict=True), strict=True))
            for f, v, o in zip(labels.files, labels.values.tolist(), labels.observed.tolist(),
                               strict=True)}
    assert labels.instruments == ("choir", "kazoo")
    assert said == {"kazoo1.flac": {"choir": (0, False), "kazoo": (1, True)},
                    "kazoo2.flac": {"choir": (0, False), "kazoo": (1, True)},
                    "choir.flac": {"choir": (1, True), "kazoo": (0, True)}}  # other: no label
    assert (seen["epochs"], seen["folds"], seen["out"]) == (7, 3, tmp_path / "run")


def test_instag_train_without_a_query_says_how_to_call_it(beets):
    beets.load_plugins("instag")
    from beets import ui

    with pytest.raises(ui.UserError, match="INSTRUMENT=QUERY"):
        beets.run_command("instag-train", "out")
