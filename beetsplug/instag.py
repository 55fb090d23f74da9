"""beets plugin: instrument recognition with instag, stored on the library's items.

``beet instag [QUERY]`` tags the matching items through instag's Python API (the same cache,
models and decode pool as ``instag tag``). ``instruments`` is a real media field, stored in the
files as instag's ``--write-tags`` stores it (ID3 ``TXXX:INSTRUMENTS``, a Vorbis/APE comment,
an MP4 freeform atom, an ASF attribute), so ``beet write``, ``import.write`` and ``beet update``
carry it between the library and the files; ``instag_<instrument>`` (the highest bag
probability) are typed flexible attributes, declared from the model card when the plugin loads,
so that ``beet ls instruments:violin`` and ``beet ls instag_violin:0.5..`` work.

Files are written the beets way: by beets (``item.try_write()``, after an import has copied or
moved them, so the source of a copy import is never touched), with beets' own guarantees
(mediafile's in-place save, ``id3v23``). Set up::

    pip install 'instag[beets]'
    # config.yaml
    plugins: instag
    instag: {auto: yes}
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from beets import ui
from beets.dbcore import types
from beets.plugins import BeetsPlugin
from mediafile import (
    ASFStorageStyle,
    ListMediaField,
    ListStorageStyle,
    MediaFile,
    MP3ListDescStorageStyle,
    MP4ListStorageStyle,
)

import instag  # its public API only: loaded lazily, so beets starts as fast as before

INSTRUMENTS = "instruments"
PREFIX = "instag_"


def tagged(item) -> bool:
    """Whether instag has tagged the item (its scores are there; `instruments` alone may be
    an empty list read from the file's own tags)."""
    return any(key.startswith(PREFIX) for key in item.keys())


def instruments_field(field: str) -> ListMediaField:
    """The field as `instag tag --write-tags` stores it, in every family mediafile knows."""
    return ListMediaField(
        MP3ListDescStorageStyle(desc=field, split_v23=True),  # beets' id3v23: "/"-joined
        MP4ListStorageStyle(f"----:com.apple.iTunes:{field}"),
        ListStorageStyle(field),  # Vorbis comments, APEv2
        ASFStorageStyle(field),
    )


class InstagPlugin(BeetsPlugin):
    def __init__(self) -> None:
        super().__init__()
        self.config.add({"auto": False, "write": None, "field": instag.TagWriting().field,
                         "model": None, "vggish": None, "pca": None, "threshold": None,
                         "device": "auto", "jobs": None})
        field = instag.TagWriting(field=self.config["field"].as_str()).field  # instag's own
        if INSTRUMENTS not in vars(MediaFile):  # a plugin loaded again in one process
            self.add_media_field(INSTRUMENTS, instruments_field(field))
        self.item_types = {INSTRUMENTS: types.MULTI_VALUE_DSV,
                           **{PREFIX + c: types.FLOAT for c in self.vocabulary()}}
        # beets' threaded importer calls the stage and the listeners below from several
        # threads at once: what they share is used under this lock
        self._lock = threading.Lock()
        self.session: instag.TagSession | None = None  # one for a whole import
        self.tagged_on_import: list = []  # items whose files are written once moved
        if self.config["auto"].get(bool):
            self.import_stages = [self.imported]
            self.register_listener("import_begin", self.import_begin)
            self.register_listener("import_task_files", self.import_task_files)
            self.register_listener("import", self.import_end)
            self.register_listener("cli_exit", self.import_end)

    def _option(self, key: str):
        return self.config[key].get() or None

    def vocabulary(self) -> list[str]:
        """The instruments of the model tagging will use, from its model card (JSON beside the
        .onnx); none when there is no model yet (`instag setup` installs one)."""
        try:
            card = instag.resolve_model(self._option("model")).with_suffix(".json")
            return list(json.loads(card.read_text())["classes"])
        except (instag.InstagError, OSError, ValueError, KeyError):
            return []

    def should_write(self, flag: bool | None = None) -> bool:
        """-w/-W, else `instag.write`, else beets' own `import.write`."""
        if flag is None and self.config["write"].get() is not None:
            flag = self.config["write"].get(bool)
        return ui.should_write(flag)

    def options(self, recompute: bool = False) -> instag.TagOptions:
        threshold = self.config["threshold"].get()
        jobs = self.config["jobs"].get()
        return instag.TagOptions(
            model=Path(m) if (m := self._option("model")) else None,
            vggish=self._option("vggish"),
            pca=Path(p) if (p := self._option("pca")) else None,
            threshold=None if threshold is None else float(threshold),
            device=self.config["device"].as_str(), jobs=None if jobs is None else int(jobs),
            force=recompute)

    # -- beet instag ----------------------------------------------------------------------------
    def commands(self) -> list[ui.Subcommand]:
        cmd = ui.Subcommand("instag", help="recognise the instruments in items (instag)")
        cmd.parser.add_option("-f", "--force", action="store_true", default=False,
                              help="also items that have instruments already (instag's cache "
                                   "spares decoding files it knows)")
        cmd.parser.add_option("--recompute", action="store_true", default=False,
                              help="decode and embed again, ignoring instag's cache")
        cmd.parser.add_option("-w", "--write", action="store_true", default=None,
                              help="write the instruments into the files (default: "
                                   "instag.write, else import.write)")
        cmd.parser.add_option("-W", "--nowrite", action="store_false", dest="write",
                              help="do not write the files' tags")
        cmd.func = self.command
        train = ui.Subcommand(
            "instag-train", help="teach instag instruments from items: instag-train OUT "
                                 "INSTRUMENT=QUERY [not-INSTRUMENT=QUERY ...]")
        train.parser.usage += " OUT INSTRUMENT=QUERY [not-INSTRUMENT=QUERY ...]"
        train.parser.add_option("--openmic", default=None,
                                help="also train on this OpenMIC-2018 directory")
        train.parser.add_option("--folds", type="int", default=None,
                                help="also cross-validate over K folds")
        train.parser.add_option("--epochs", type="int", default=250)
        train.func = self.train_command
        return [cmd, train]

    # -- beet instag-train ----------------------------------------------------------------------
    def train_command(self, lib, opts, args) -> None:
        """Items matching each INSTRUMENT=QUERY are songs with it, those matching
        not-INSTRUMENT=QUERY songs without it (the folder layout of `instag train
        --labels-from-folders`, with queries for folders); items matched by neither are
        unlabelled for it. Trains as `instag train --labels` does."""
        if len(args) < 2 or not all("=" in a for a in args[1:]):
            raise ui.UserError("instag-train: give OUT and at least one INSTRUMENT=QUERY "
                               "(e.g. kazoo=genre:kazoo not-kazoo=genre:classical)")
        rows = []
        for spec in args[1:]:
            label, query = spec.split("=", 1)
            prefix = instag.learning.NEGATIVE_PREFIX
            negative = label.startswith(prefix)
            for item in lib.items(query):
                rows.append((f"{spec} ({item})", Path(os.fsdecode(item.path)),
                             label.removeprefix(prefix) if negative else label,
                             "0" if negative else "1"))
        try:
            labels = instag.learning.labels_from_rows(rows, f"beets queries {' '.join(args[1:])}")
            taught = instag.teach(labels, Path(args[0]), self.options(),
                                  instag.learning.Recipe(epochs=opts.epochs),
                                  Path(opts.openmic) if opts.openmic else None,
                                  folds=opts.folds, force=True)
        except instag.InstagError as e:
            raise ui.UserError(f"instag: {e}") from None
        for result in taught.failed:
            self._log.warning("{}: {} ({}); left out", result.display_path, result.status,
                              result.reason)
        for name in labels.instruments:
            r = taught.metrics["per_class"][name]
            ui.print_(f"{name}: held-out F1 {r.get('f1', float('nan')):.3f}, AP "
                      f"{r.get('ap', float('nan')):.3f} on {r['n_positive']} positives")
        ui.print_(f"-> {args[0]}; `instag export-onnx {args[0]}`, then set instag.model to "
                  "the .onnx: its instruments become fields")

    def command(self, lib, opts, args) -> None:
        items = list(lib.items(args))
        todo = [it for it in items if opts.force or opts.recompute or not tagged(it)]
        if todo:
            try:
                with instag.TagSession(self.options(opts.recompute)) as session:
                    self.tag_items(session, todo)
            except instag.InstagError as e:
                raise ui.UserError(f"instag: {e}") from None
        if self.should_write(opts.write):
            for item in items:  # already tagged or just now: nothing is decoded to write
                if tagged(item):
                    item.try_write()
                    item.store()

    def tag_items(self, session: instag.TagSession, items) -> list:
        """Store instruments and scores on the items; an item that fails is logged with its
        reason and skipped. Returns the items tagged."""
        by_path = {bytes(it.path): it for it in items}
        tagged = []
        for result in session.tag([Path(os.fsdecode(p)) for p in by_path]):
            item = by_path[os.fsencode(result.path)]
            if not result.ok:
                self._log.warning("{}: {} ({})", result.display_path, result.status,
                                  result.reason)
                continue
            item[INSTRUMENTS] = result.instruments()
            for name, p in result.best().items():
                item[PREFIX + name] = round(p, 4)
            item.store()
            tagged.append(item)
            self._log.info("{}: {}", result.display_path,
                           ", ".join(result.instruments()) or "no instrument")
        return tagged

    # -- auto: yes ------------------------------------------------------------------------------
    def import_begin(self, session=None) -> instag.TagSession | None:
        """One instag session (lock, models, decode pool) for the whole import: opened here, in
        beets' main thread, and used by the import stage in a thread of beets' pipeline."""
        with self._lock:
            if self.session is None:
                try:
                    self.session = instag.TagSession(self.options()).__enter__()
                except instag.BusyError as e:  # another run holds the cache: the next import
                    self._log.warning("instag: busy, not tagging this import (the next "
                                      "`beet import` or `beet instag` will): {}", e)
                except instag.SetupError as e:
                    self._log.warning("instag: not set up, not tagging this import (run "
                                      "`instag setup`): {}", e)
                except instag.InstagError as e:
                    self._log.warning("instag: not tagging this import: {}", e)
            return self.session

    def imported(self, session, task) -> None:
        """The import stage: tags what the import brings in, reading the files where they
        are; nothing is written here (beets has not copied or moved them yet)."""
        tagging = self.import_begin()  # opened already, unless the importer sent no event
        if tagging is None:
            return
        items = [it for it in task.imported_items() if not tagged(it)]
        try:
            done = self.tag_items(tagging, items)
        except instag.InstagError as e:
            self._log.warning("instag: {} items not tagged: {}", len(items), e)
            return
        with self._lock:
            self.tagged_on_import.extend(done)

    def import_task_files(self, session, task) -> None:
        """The files are in the library now (copied, moved or left in place): write the
        instruments into them, the beets way, if instag should write."""
        done = {it.id for it in task.imported_items()}
        with self._lock:
            mine = [it for it in self.tagged_on_import if it.id in done]
            self.tagged_on_import = [it for it in self.tagged_on_import if it.id not in done]
        if mine and self.should_write():
            for item in mine:
                item.load()  # its path in the library
                item.try_write()
                item.store()

    def import_end(self, *args, **kwargs) -> None:
        with self._lock:
            ending, self.session = self.session, None
        if ending is not None:
            ending.__exit__(None, None, None)
