"""The beets plugin: `beet instag`, typed fields that queries understand, the import stage."""

import os
from pathlib import Path

import mutagen
import pytest
import soundfile as sf
from builders import SR, music

beets_helper = pytest.importorskip("beets.test.helper")
from beets.library import Item  # noqa: E402


class Beets(beets_helper.PluginMixin, beets_helper.ImportHelper):
    plugin = "instag"
    preload_plugin = False  # loaded once instag's environment is set


@pytest.fixture
def beets(monkeypatch, scoring_model, standin_vggish, standin_pca):
    monkeypatch.setenv("INSTAG_MODEL", str(scoring_model))
    monkeypatch.setenv("INSTAG_VGGISH", str(standin_vggish))
    monkeypatch.setenv("INSTAG_PCA", str(standin_pca))
    helper = Beets()
    helper.setup_beets()
    yield helper
    helper.teardown_beets()


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
        helper.lib.add(item)
        items.append(item)
    return items


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
    assert list(mutagen.File(os.fsdecode(item.path))["INSTRUMENTS"]) == ["c0", "c1", "c2"]
    assert item.mtime == item.current_mtime()


def test_auto_tags_what_beet_import_brings_in(beets, tmp_path):
    beets.config["instag"]["auto"] = True
    beets.load_plugins("instag")
    sf.write(beets.import_path / "new.flac", music(5, 9), SR)
    beets.setup_importer(autotag=False, copy=False)
    beets.importer.run()
    (item,) = beets.lib.items()
    assert "instruments" in item and isinstance(item["instag_c1"], float)
