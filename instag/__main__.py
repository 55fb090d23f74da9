"""`instag` and `python -m instag`: the command line, with a Ctrl-C or SIGTERM at any moment
ending in one line and exit 130 or 143, never a traceback: during its start-up (while typer,
rich and the commands import, and while typer builds the commands from their signatures, or
parses the options, where typer itself would turn a Ctrl-C into a silent exit 130), and once
a command runs (it says what it did and kept itself); once a command's output is in place,
its exit code stands. A usage error (a bad option value, an unknown option) comes in the same
`error:` / `fix:` lines as every other expected error."""

import signal
import sys

from instag.common.stops import STOPS, Process, Terminated, signal_behind, stop_for


def _stop(signum: int, frame) -> None:
    """The first stop signal unwinds the command; once it unwinds, or once its output is in
    place (its exit code then stands), they change nothing."""
    if not Process.held:
        Process.held = True
        raise stop_for(signum)


def main() -> None:
    """The process's entry point: once the command is over, Ctrl-C and SIGTERM are ignored
    until the process has exited (finalising it, or waiting for a thread, must not turn a
    finished command into a traceback or a death by SIGTERM)."""
    Process.held = Process.said = False
    for s in STOPS:
        signal.signal(s, _stop)
    try:
        code = _run()
    except SystemExit:
        raise
    except BaseException as e:
        if (behind := signal_behind(e)) is None:
            raise
        code = 143 if isinstance(behind, Terminated) else 130
    for s in STOPS:  # the command is over: what it did stands
        signal.signal(s, signal.SIG_IGN)
    if code in (130, 143) and not Process.said:
        sys.stderr.write(f"{'interrupted' if code == 130 else 'terminated'}: nothing done\n")
    # A Ctrl-C inside exec() or eval() of a string (dataclasses, typer's annotations) leaves
    # CPython's "unhandled KeyboardInterrupt" mark set, and Python would then end itself by
    # SIGINT whatever the exit code; the next such call clears it.
    exec("")
    sys.exit(code)


def _run() -> int:
    import typer

    from instag.cli import app
    from instag.cli.console import terminal_safe

    usage_error = typer.BadParameter.__base__  # click's UsageError, as typer bundles it
    try:
        code = app(prog_name="instag", standalone_mode=False)
    except usage_error as e:  # typer would draw it in a box
        where = e.ctx.command_path if e.ctx else "instag"
        message = terminal_safe(e.format_message().replace("Value error, ", ""))  # (pydantic's)
        sys.stderr.write(f"error: {message}\n  fix: see `{where} --help`\n")
        return 2
    except typer.Abort:  # Ctrl-C at a prompt
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    main()
