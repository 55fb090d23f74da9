"""`instag` and `python -m instag`: the command line, with a Ctrl-C during its start-up (while
typer, rich and the commands import, and while typer builds the commands from their signatures)
ending in one line, never a traceback; and a usage error (a bad option value, an unknown
option) in the same `error:` / `fix:` lines as every other expected error. Once a command
runs, it says what it did itself."""

import sys


def main() -> None:
    try:
        import typer

        from instag.cli import app

        usage_error = typer.BadParameter.__base__  # click's UsageError, as typer bundles it
        try:
            code = app(prog_name="instag", standalone_mode=False)
        except usage_error as e:  # typer would draw it in a box
            where = e.ctx.command_path if e.ctx else "instag"
            sys.stderr.write(f"error: {e.format_message()}\n  fix: see `{where} --help`\n")
            sys.exit(2)
        except typer.Abort:  # Ctrl-C at a prompt
            sys.stderr.write("interrupted: nothing done\n")
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: nothing done\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
