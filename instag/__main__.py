"""`instag` and `python -m instag`: the command line, with a Ctrl-C during its start-up (while
typer, rich and the commands import, and while typer builds the commands from their signatures)
ending in one line, never a traceback. Once a command runs, it says what it did itself."""

import sys


def main() -> None:
    try:
        from instag.cli import app

        app()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: nothing done\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
