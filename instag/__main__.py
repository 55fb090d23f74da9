"""`instag` and `python -m instag`: the command line, with a Ctrl-C during its start-up (while
typer, rich and the commands import) ending in one line, never a traceback."""

import sys


def main() -> None:
    try:
        from instag.cli import app
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: nothing done\n")
        sys.exit(130)
    app()


if __name__ == "__main__":
    main()
