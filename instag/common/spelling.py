"""How a message names an option: as the caller spelled it, its flag on the command line
(`--bag 0`), its keyword from Python (`bag=0`). The CLI's commands set `cli_spelling` while
they run; everything else is a Python caller."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from instag.common.errors import UsageError

_CLI = contextvars.ContextVar("instag_cli_spelling", default=False)


@contextlib.contextmanager
def cli_spelling() -> Iterator[None]:
    token = _CLI.set(True)
    try:
        yield
    finally:
        _CLI.reset(token)


def option(name: str) -> str:
    """The option `name` (a Python keyword) as the caller knows it."""
    return "--" + name.replace("_", "-") if _CLI.get() else name


def output(flag: str, python: str) -> str:
    """An output as the caller named it: `--summary` on the command line, `SummaryFile`
    from Python."""
    return flag if _CLI.get() else python


def said(name: str, value: object) -> str:
    """The option with its value as the caller wrote it: `--bag 0` or `bag=0`."""
    return f"{option(name)} {value}" if _CLI.get() else f"{name}={value!r}"


def choice(kind, value, name: str):
    """A choice given as text (`engine="ray"`, a beets config's `resampler: soxr`) as its enum;
    another is a usage error naming the option as the caller spelled it, with the choices."""
    try:
        return kind(value)
    except ValueError:
        raise UsageError(f"{said(name, value)}: not one of "
                         f"{', '.join(str(c.value) for c in kind)}",
                         f"e.g. {said(name, next(iter(kind)).value)}") from None
