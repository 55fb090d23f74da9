"""Commands for a machine: setup (provision everything) and doctor (say what is there)."""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from instag.cli.console import (
    EXIT_USAGE,
    DeviceOpt,
    PcaOpt,
    VggishOpt,
    console,
    expected_errors,
    parse_seeds,
)
from instag.common.devices import Device
from instag.provision.doctor import diagnose
from instag.provision.setup import SetupOptions
from instag.provision.setup import setup as run_setup
from instag.provision.verify import verify_installed

DOWNLOAD_LINE_SECONDS = 10.0  # off a terminal, a download says how far it is this often


def download_lines(say, seconds: float = DOWNLOAD_LINE_SECONDS, clock=time.monotonic):
    """A download's progress as a line every `seconds` (for logs): bytes, rate, time left."""
    started = last = clock()

    def update(done: int, total: int | None) -> None:
        nonlocal last
        now = clock()
        if now - last < seconds and done != total:
            return
        last = now
        rate = done / max(now - started, 1e-9)
        of = "" if total is None else f" of {total / 1e9:.2f} GB ({done / total:.0%})"
        left = "" if total is None or not rate else \
            f", about {timedelta(seconds=round((total - done) / rate))} left"
        say(f"      downloaded {done / 1e9:.2f} GB{of}, {rate / 1e6:.1f} MB/s{left}")

    return update


def _download_progress(say):
    """A rich progress bar for downloads on a terminal; a line every few seconds otherwise."""
    if not sys.stderr.isatty():
        return download_lines(say), lambda: None
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bar = Progress(BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                   console=console(stderr=True))
    task = bar.add_task("download", total=None)
    bar.start()

    def update(done: int, total: int | None) -> None:
        bar.update(task, completed=done, total=total)

    return update, bar.stop


@expected_errors
def setup(
    openmic: Annotated[Path | None, typer.Option(
        help="An OpenMIC-2018 archive (.tgz) or extracted directory you already have.")] = None,
    offline: Annotated[bool, typer.Option(help="Never touch the network; say what is "
                                               "missing.")] = False,
    seeds: Annotated[str, typer.Option(help="Seeds to train; the best validation loss is "
                                            "kept.")] = "0",
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs per seed (the paper: "
                                                    "250).")] = 250,
    device: DeviceOpt = Device.AUTO,
    vggish: Annotated[str | None, typer.Option(
        "--vggish", help="VGGish from a local SavedModel folder (offline, or a mirror) or a hub "
                         "URL; remembered for tagging (default: $INSTAG_VGGISH, else "
                         "tfhub.dev).")] = None,
    pca: Annotated[Path | None, typer.Option(
        "--pca", help="vggish_pca_params.npz from a local file; remembered for tagging "
                      "(default: $INSTAG_PCA, else the official file, downloaded).")] = None,
    force: Annotated[bool, typer.Option(help="Redo steps whose results are already there: "
                                             "fetch, extract and train again.")] = False,
    only_int8: Annotated[bool, typer.Option(
        "--only-int8", help="Only the INT8 step, on a machine already set up: quantise VGGish "
                            "and keep it only where it gives FP32's tags (the docs: "
                            "guides/int8.md).")] = False,
    skip_int8: Annotated[bool, typer.Option(
        "--skip-int8", help="Every step but the INT8 one (a few minutes saved; "
                            "`--only-int8` makes it later).")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="Old spelling of --only-int8.",
                                       hidden=True)] = False,
) -> None:
    """Provision a new machine: VGGish, PCA, OpenMIC-2018, and a trained, exported model.

    Offline: --vggish DIR --pca FILE --openmic PATH (each remembered). Sources and places are
    configurable by environment: INSTAG_VGGISH, INSTAG_PCA, INSTAG_OPENMIC_URL, INSTAG_PCA_URL,
    INSTAG_CACHE_DIR, INSTAG_DATA_DIR, TFHUB_CACHE_DIR. Re-running skips finished steps.
    """
    if int8:  # the old spelling, for one release
        console(stderr=True).print("note: --int8 is now --only-int8 (--int8 goes in the next "
                                   "release)", markup=False)
    opts = SetupOptions(openmic=openmic, offline=offline, seeds=tuple(parse_seeds(seeds)),
                        epochs=epochs, device=device, vggish=vggish, pca=pca, force=force,
                        show_progress=sys.stderr.isatty(), only_int8=only_int8 or int8,
                        skip_int8=skip_int8)
    out = console()
    say = lambda m: out.print(m, markup=False)  # noqa: E731
    progress, stop = _download_progress(say)
    try:
        model = run_setup(opts, say=say, progress=progress)
    finally:
        stop()
    out.print(f"\nReady. Next:\n  instag tag ~/Music --out tags.csv\n(scoring model: {model})",
              markup=False)


@expected_errors
def doctor(
    model: Annotated[Path | None, typer.Option(help="Scoring model to check.")] = None,
    vggish: VggishOpt = None,
    pca: PcaOpt = None,
    verify: Annotated[bool, typer.Option(
        help="Also re-embed the sample of OpenMIC clips setup kept and compare with the "
             "released features (exit 2 below 99 % within one step).")] = False,
) -> None:
    """Show versions, GPU support, directories and models; exit 2 if `instag tag` can't run."""
    checks = diagnose(str(model) if model else None, vggish, str(pca) if pca else None)
    out = console()
    marks = {True: "ok ", False: "NO ", None: "   "}
    for c in checks:  # a line each: a long path wraps as a whole, never into table cells
        out.print(f"{marks[c.ok]} {c.section}: {c.item}: {c.value}", markup=False)
    blocking = [c for c in checks if c.blocks_tagging]
    if blocking:
        console(stderr=True).print("instag tag cannot run: " + "; ".join(
            f"{c.item}: {c.value}" for c in blocking), markup=False)
        raise typer.Exit(EXIT_USAGE)
    if verify:
        check = verify_installed(vggish, pca)
        out.print(check.line(), markup=False)
        if not check.passed:
            console(stderr=True).print("instag tag can run, but its features are not "
                                       "verified (above)", markup=False)
            raise typer.Exit(EXIT_USAGE)
    out.print("instag tag can run.")
