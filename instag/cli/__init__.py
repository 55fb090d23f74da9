"""The `instag` command line: parse options, call the library, print, set the exit code.

One module per audience: the main job (`tag`), what else reads or makes a library's outputs
(`tagging`), what shows it (`figures`), reproducing the paper (`learning`), setting up a machine
(`provision`). Heavy libraries (torch, tensorflow, onnxruntime) are imported only inside the
library functions that need them, so `instag --help` stays instant.
"""

from __future__ import annotations

from typing import Annotated

import typer

from instag.cli import figures, learning, provision, tag, tagging, upkeep
from instag.cli.console import Command
from instag.common import VERSION

app = typer.Typer(
    help="Recognise musical instruments in music libraries (Gururani, Sharma & Lerch, ISMIR 2019).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"instag {VERSION}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print instag's version and exit.")] = False,
) -> None:
    """Recognise musical instruments in music libraries (Gururani, Sharma & Lerch, ISMIR 2019)."""

app.command(cls=Command)(provision.setup)
app.command(cls=Command)(provision.doctor)
app.command(cls=Command)(tag.tag)
app.command("plot", cls=Command)(figures.plot)
app.command(cls=Command)(tagging.export)
app.command(cls=Command)(figures.browse)
app.command("write-tags", cls=Command)(tagging.write_tags)
app.command(cls=Command)(tagging.embed)
app.add_typer(upkeep.app, name="cache")
app.command(cls=Command)(learning.train)
app.command(cls=Command)(learning.evaluate)
app.command(cls=Command)(learning.report)
app.command("export-onnx", cls=Command)(learning.export_onnx)
