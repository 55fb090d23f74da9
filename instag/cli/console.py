"""What every command shares: consoles, exit codes, one-line expected errors, common options."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Annotated

import typer

from instag.common.devices import Device
from instag.common.errors import InstagError, UsageError
from instag.common.spelling import cli_spelling
from instag.common.stops import Process, Terminated, signal_behind
from instag.features.resample import Resampler

EXIT_SOME_FAILED, EXIT_USAGE = 1, 2  # 0: everything worked
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT, 128 + SIGTERM


class Command(typer.core.TyperCommand):
    """Every instag command's help: --help sits in the command's last panel (not in a panel of
    its own), and neither an argument with a metavar (`PATH...`) nor a flag (`--serve`, which
    takes no value) shows a Python type beside it."""

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        panels = [p for p in (getattr(q, "rich_help_panel", None) for q in self.params) if p]
        if option is not None and panels:
            option.rich_help_panel = panels[-1]
        return option

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if (isinstance(param, typer.core.TyperArgument) and param.metavar) or \
                    getattr(param, "is_flag", False):
                param.display_type_rich = lambda ctx: None  # type: ignore[method-assign]
        return params


# what a file name may hold that a terminal acts on (an escape sequence colours, retitles, writes
# the clipboard; a carriage return overwrites the line): shown as \xNN, never sent raw
CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))
            if c not in (0x09, 0x0A)}


def terminal_safe(text: str) -> str:
    """`text` as a terminal shows it and does nothing else: control characters escaped."""
    return text.translate(CONTROLS)


def console(stderr: bool = False, width: int | None = None):
    """A console whose printed text can hold any file name (`terminal_safe`)."""
    from rich.console import Console

    class SafeConsole(Console):
        def print(self, *objects, **kwargs) -> None:
            super().print(*(terminal_safe(o) if isinstance(o, str) else o for o in objects),
                          **kwargs)

    return SafeConsole(stderr=stderr, highlight=False, soft_wrap=True,  # paths never break
                       width=width)


def print_table(table) -> None:
    """A table at its natural width, even on a narrow terminal: numbers, names and paths are
    never cut or broken mid-word (a terminal wraps a long line whole; logs keep it whole)."""
    from rich.measure import Measurement

    out = console()
    natural = Measurement.get(out, out.options.update_width(10_000), table).maximum
    if natural > out.width:
        out = console(width=natural)
    out.print(table)


def say_stopped(signal_error: KeyboardInterrupt | Terminated, what: str) -> int:
    """Say in one line that a signal stopped the command and `what` it leaves; its exit code.
    (Said once: `python -m instag` says nothing more.)"""
    word, code = (("terminated", EXIT_TERMINATED) if isinstance(signal_error, Terminated) else
                  ("interrupted", EXIT_INTERRUPTED))
    console(stderr=True).print(f"{word}: {what}", markup=False)
    Process.said = True
    return code


def expected_errors(fn):
    """Turn an InstagError into one clear message and exit code 2, and a Ctrl-C or SIGTERM the
    command did not handle itself (loading models, before anything is written) into one line
    and exit code 130 or 143: never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with cli_spelling():  # errors name the flags the user typed
                return fn(*args, **kwargs)
        except (InstagError, KeyboardInterrupt, Terminated, ImportError) as e:
            if (behind := signal_behind(e)) is not None:
                raise typer.Exit(say_stopped(behind, "nothing written")) from None
            if not isinstance(e, InstagError):
                raise
            from rich.markup import escape

            console(stderr=True).print(f"[bold red]error:[/] {escape(str(e))}", markup=True)
            raise typer.Exit(EXIT_USAGE) from None

    return wrapper


def _file_to_write(value: str | Path, dataset: bool = False) -> Path:
    text = os.fspath(value)
    last = text.replace(os.sep, "/").rsplit("/", 1)[-1]
    if last in ("", ".", "..") and not (dataset and text and not Path(text).suffix):
        raise typer.BadParameter(
            f"{text!r} names a folder; name the file to write" + (
                " (a Parquet dataset's folder: --format parquet --out NAME/, no extension)"
                if dataset else ""))
    return Path(text)


def _folder_to_write(value: str | Path) -> Path:
    if not os.fspath(value):  # Path("") is the current folder
        raise typer.BadParameter("'' names no folder; name the folder to write into")
    return Path(value)


# an output file's option read as typed: a name ending in a separator (or in . or ..) names a
# folder, which no file output writes into (Typer's `Path` drops a trailing `/` or `/.`, and a
# file of the folder's name was written); the tags' --out may name a Parquet dataset's folder
FILE_TO_WRITE = {"parser": _file_to_write, "metavar": "<path>"}
TAGS_TO_WRITE = {"parser": lambda v: _file_to_write(v, dataset=True), "metavar": "<path>"}
FOLDER_TO_WRITE = {"parser": _folder_to_write, "metavar": "<path>"}


def given(ctx: typer.Context, name: str) -> bool:
    """Whether the user gave the option (on the command line or in its environment variable),
    not its default."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def refuse_without(ctx: typer.Context, needs: dict[str, tuple[bool, str]]) -> None:
    """Options that mean something only with another: each one given while its condition is
    false is refused (one line, exit 2), rather than silently ignored."""
    for name, (met, needed) in needs.items():
        if not met and given(ctx, name):
            flag = next(("/".join(p.opts + p.secondary_opts) for p in ctx.command.params
                         if p.name == name), name)
            raise UsageError(f"{flag} means something only with {needed}",
                             f"add {needed}, or leave {flag.split('/')[0]} out")


# `instag tag --help` in panels, the options a newcomer needs first
INPUT, OUTPUTS, MODEL, ENGINE, FILE_TAGS, ADVANCED = (
    "Input", "Outputs", "Model and scoring", "Engine", "File tags (--write-tags)", "Advanced")


def parse_seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise InstagError(f"--seeds {text!r}: expected comma-separated integers",
                          "e.g. --seeds 0,42") from None


DeviceOpt = Annotated[Device, typer.Option(help="auto (CUDA when available), cpu or cuda.")]
VggishOpt = Annotated[str | None, typer.Option(
    "--vggish", help="VGGish hub URL or local SavedModel dir (default: $INSTAG_VGGISH, else the "
                     "official tfhub.dev model).")]
PcaOpt = Annotated[Path | None, typer.Option(
    "--pca", help="vggish_pca_params.npz (default: $INSTAG_PCA, else the official file, fetched "
                  "once and checksum-verified).")]
ResamplerOpt = Annotated[Resampler, typer.Option(
    help="fast (default: resampy's kaiser_best, VGGish's reference, as a polyphase filter "
         "bank; 1e-6 from resampy), resampy (the library itself, ~50x slower) or soxr (moves "
         "the top two mel bands by ~3 dB; see the docs: explanation/fidelity.md).")]
JobsOpt = Annotated[int | None, typer.Option(min=1, help="Decoding processes (default: CPUs, "
                                                          "never more than files).")]
CacheOpt = Annotated[Path | None, typer.Option(
    help="SQLite cache of features (default: tags.sqlite in the user cache dir).",
    **FILE_TO_WRITE)]
PrecisionOpt = Annotated[str | None, typer.Option(
    help="VGGish's precision: fp32, or int8 (the quantised model `instag setup` made and "
         "kept only where it gives FP32's tags). Default: $INSTAG_PRECISION, else "
         "`precision` in settings.json, else fp32.")]
FeaturePrecisionOpt = Annotated[str | None, typer.Option(
    "--precision", help="VGGish's precision for these features: fp32 (always the default, "
                        "whatever INSTAG_PRECISION or settings.json say: features to train on "
                        "or to compare with OpenMIC's are FP32's) or int8.")]
