"""beets plugin: instrument recognition with instag, stored on the library's items.

``beet instag [QUERY]`` tags the matching items through instag's Python API (the same cache,
models and decode pool as ``instag tag``) and stores flexible attributes: ``instruments`` (the
instruments present) and one float per instrument, ``instag_<instrument>`` (its highest bag
probability), so that ``beet ls instruments:violin`` and ``beet ls instag_violin:0.5..`` work.
The float fields are declared when the plugin loads, from the model card beside the ONNX model
(no model runs for that). ``-w/--write`` also writes the files' own tags with instag's atomic
writer and records each file's new mtime, so beets does not take it for an outside change.
``auto: yes`` runs it on every ``beet import``. Set up::

    pip install 'instag[beets]'
    # config.yaml
    plugins: instag
    instag: {auto: yes}
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from beets import ui
from beets.dbcore import types
from beets.plugins import BeetsPlugin

import instag  # its public API only: loaded lazily, so beets starts as fast as before

INSTRUMENTS = "instruments"
PREFIX = "instag_"


class InstagPlugin(BeetsPlugin):
    def __init__(self) -> None:
        super().__init__()
        self.config.add({"auto": False, "force": False, "write": False, "model": None,
                         "vggish": None, "pca": None, "threshold": None, "device": "auto",
                         "jobs": None})
        self.item_types = {INSTRUMENTS: types.MULTI_VALUE_DSV,
                           **{PREFIX + c: types.FLOAT for c in self.vocabulary()}}
        if self.config["auto"].get(bool):
            self.import_stages = [self.imported]

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

    def commands(self) -> list[ui.Subcommand]:
        cmd = ui.Subcommand("instag", help="recognise the instruments in items (instag)")
        cmd.parser.add_option("-f", "--force", action="store_true", default=False,
                              help="tag items that have instruments already, and recompute")
        cmd.parser.add_option("-w", "--write", action="store_true", default=False,
                              help="also write the instruments into the files' own tags")
        cmd.func = lambda lib, opts, args: self.tag_items(
            lib.items(args), force=opts.force or self.config["force"].get(bool),
            write=opts.write or self.config["write"].get(bool))
        return [cmd]

    def imported(self, session, task) -> None:
        self.tag_items(task.imported_items(), force=False, write=self.config["write"].get(bool))

    def tag_items(self, items, force: bool, write: bool) -> None:
        """Tag the items (all of them with `force`, else those without instruments); an item
        that fails is logged with its reason and skipped."""
        todo = {bytes(it.path): it for it in items if force or INSTRUMENTS not in it}
        if not todo:
            return
        threshold = self.config["threshold"].get()
        jobs = self.config["jobs"].get()
        options = instag.TagOptions(
            model=Path(m) if (m := self._option("model")) else None,
            vggish=self._option("vggish"),
            pca=Path(p) if (p := self._option("pca")) else None,
            threshold=None if threshold is None else float(threshold),
            device=self.config["device"].as_str(), jobs=None if jobs is None else int(jobs),
            force=force, write_tags=instag.TagWriting() if write else None)
        paths = [Path(os.fsdecode(p)) for p in todo]
        try:
            for result in instag.tag(paths, options):
                item = todo[os.fsencode(result.path)]
                if not result.ok:
                    self._log.warning("{}: {} ({})", result.display_path, result.status,
                                      result.reason)
                    continue
                item[INSTRUMENTS] = result.instruments()
                for name, p in result.best().items():
                    item[PREFIX + name] = round(p, 4)
                if result.file_tags.startswith("written"):
                    item.mtime = item.current_mtime()  # instag's write, not an outside change
                elif result.file_tags.startswith("failed"):
                    self._log.warning("{}: file tags {}", result.display_path, result.file_tags)
                item.store()
                self._log.info("{}: {}", result.display_path,
                               ", ".join(result.instruments()) or "no instrument")
        except instag.InstagError as e:
            raise ui.UserError(f"instag: {e}") from None
