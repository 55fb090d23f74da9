"""`instag cache`: what the tagging cache holds, and `instag cache prune` to shrink it."""

from __future__ import annotations

import datetime
import shlex
from pathlib import Path
from typing import Annotated

import typer

from instag.cli.console import console, expected_errors
from instag.cli.tagging import CacheOpt, WaitOpt
from instag.common.errors import InstagError
from instag.engines.local.cache import Cache, lock
from instag.engines.local.cachefile import moved_aside
from instag.tagging.options import TagOptions

app = typer.Typer(help="What the tagging cache holds (features per file and VGGish); prune it.",
                  invoke_without_command=True, no_args_is_help=False)

PRUNE_DAYS = 90  # default: a library tagged at least once a quarter keeps its entries


def _existing(cache: Path | None) -> Path:
    path = TagOptions(cache=cache).cache_path()
    if not path.is_file():
        raise InstagError(f"{path}: no cache here yet", "`instag tag` makes it; --cache names "
                          "another")
    return path


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 1e6 else f"{n / 1e3:,.0f} kB"


def _day(day: int) -> str:
    return datetime.date.fromordinal(datetime.date(1970, 1, 1).toordinal() + day).isoformat()


@app.callback()
@expected_errors
def show(ctx: typer.Context, cache: CacheOpt = None) -> None:
    """Show the cache's size and entries, per features identity.

    A features identity is VGGish's digest, the PCA file's, the resampler and instag's
    feature code; each is shown with the day a run last used it. Databases moved aside as
    damaged are listed with the command that removes them: instag uses them no more."""
    if ctx.invoked_subcommand:
        return
    path = TagOptions(cache=cache).cache_path()
    if not path.is_file() and moved_aside(path):  # only what was moved aside is left
        _aside(path)
        return
    with Cache(_existing(cache)) as db:
        stats = db.stats()
    out = console()
    entries = sum(i.entries for i in stats.identities)
    out.print(f"{stats.path}: {f'{entries:,} entries'}, {_mb(stats.size)} on disk",
              markup=False)
    for i in stats.identities:
        failures = i.entries - i.ok
        stay = "failure that stays" if failures == 1 else "failures that stay"
        out.print(f"  {i.vggish}: {i.entries:,} files ({i.ok:,} with features, "
                  f"{failures:,} {stay}), {_mb(i.feature_bytes)} of features, last used "
                  f"{_day(i.last_used)}", markup=False)
    _aside(stats.path)


def _aside(path: Path) -> None:
    """The databases moved aside as damaged beside `path`, and how to remove them."""
    out = console()
    if aside := moved_aside(path):
        if not path.is_file():
            out.print(f"{path}: no cache here yet (the next `instag tag` makes one)",
                      markup=False)
        out.print("moved aside as damaged (instag uses them no more):", markup=False)
        for p, size in aside:
            out.print(f"  {p}: {_mb(size)}", markup=False)
        out.print(f"  remove them with: rm -- {' '.join(shlex.quote(str(p)) for p, _ in aside)}",
                  markup=False)


@app.command()
@expected_errors
def prune(
    unused_days: Annotated[float, typer.Option(
        min=0, help="Drop entries no run has used for this many days (features of another "
                    "VGGish or PCA, files no longer tagged).")] = PRUNE_DAYS,
    cache: CacheOpt = None,
    wait: WaitOpt = False,
) -> None:
    """Drop entries of files changed or gone, and entries unused for --unused-days.

    A file counts as gone when its folder is still there (an unmounted disk keeps its
    entries). The file is compacted afterwards (VACUUM). Holds the run lock: no run uses the
    cache meanwhile."""
    path = _existing(cache)
    with lock(path, wait) as held, Cache(path, held) as db:
        dropped, freed = db.prune(unused_days)
    console().print(f"{path}: dropped {f'{dropped:,} entries'}, {_mb(freed)} "
                    "freed", markup=False)
