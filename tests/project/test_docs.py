"""The documentation stays true: README fits on a screen, names no build-machine path and shows
only options the CLI has; the site builds strictly, its CLI reference covering every command
and option (generated at build time, so a failed generation must not pass as an empty page)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from instag.cli import app

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
# paths of the machine instag was built on: temporary folders, the local test server, the
# shared test data beside the checkout
BUILD_MACHINE = re.compile(r"/tmp/|127\.0\.0\.1:8765|\.\./shared|/work/")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
WIDE = {"COLUMNS": "250", "TERMINAL_WIDTH": "250"}


def readme() -> str:
    return README.read_text(encoding="utf-8")


def instag_calls(text: str) -> list[tuple[list[str], list[str]]]:
    """(command path, options) of every `instag ...` call in the text's code blocks."""
    calls = []
    for block in FENCE.findall(text):
        for line in block.splitlines():
            # a comment may name a call too (`# offline: instag setup --offline ...`)
            for part in re.split(r"&&|\|\|?|;|(?:^|\s)#\s", line):
                try:
                    words = shlex.split(part)
                except ValueError:
                    continue
                # instag as the command (`beet instag` is beets'), or named in a comment
                starts = [i for i, w in enumerate(words) if Path(w).name == "instag"
                          and (i == 0 or words[i - 1].endswith(":"))]
                if starts:
                    calls.append(command_and_options(words[starts[0] + 1:]))
    return calls


def command_and_options(words: list[str]) -> tuple[list[str], list[str]]:
    group = typer.main.get_command(app)
    command: list[str] = []
    for word in words:  # the command, and a group's subcommand (`cache prune`)
        if word in getattr(group, "commands", {}):  # Typer's groups: click's, or its own copy
            command.append(word)
            group = group.commands[word]
        else:
            break
    options = [w.split("=")[0] for w in words if w.startswith("--") and w != "--"]
    return command, options


def help_text(command: list[str]) -> str:
    result = CliRunner().invoke(app, [*command, "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    return result.output


def test_readme_fits_on_a_screen_and_names_no_build_machine_path():
    text = readme()
    assert len(text.splitlines()) <= 200
    assert not BUILD_MACHINE.findall(text)
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):  # its links lead somewhere
        assert (ROOT / target).exists(), target


def test_every_option_readme_shows_is_one_the_cli_lists():
    calls = instag_calls(readme())
    assert {"tag", "setup", "browse"} <= {c[0] for c, _ in calls if c}
    for command, options in calls:
        assert command, f"README runs instag with an unknown command: {command}"
        listed = help_text(command)
        for option in options:
            assert option in listed, f"instag {' '.join(command)} has no {option}"


def test_the_checker_catches_an_option_that_does_not_exist():
    calls = instag_calls("```bash\ninstag tag ~/Music --out x.csv --no-such-option\n```\n")
    assert calls == [(["tag"], ["--out", "--no-such-option"])]
    assert "--no-such-option" not in help_text(["tag"])


def every_command(group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if hasattr(command, "commands"):
            yield from every_command(command, (*prefix, name))


def test_the_site_builds_strictly_and_its_cli_reference_covers_every_command(tmp_path):
    if shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("mkdocs is not installed (the docs extra installs it)")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1",
           # mkdocs-typer2 runs `typer` (this venv's) and imports instag (this checkout's)
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    site = tmp_path / "site"
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    cli = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    for path, command in every_command(typer.main.get_command(app)):
        assert f"instag {' '.join(path)}" in cli, f"no section for instag {' '.join(path)}"
        for param in command.params:
            if getattr(param, "hidden", False):  # an old spelling, kept for one release
                continue
            for option in [*param.opts, *param.secondary_opts]:
                if option.startswith("--"):
                    assert option in cli, f"instag {' '.join(path)} {option} is not documented"
    for page in site.rglob("*.html"):  # no user page names a build-machine path
        assert not BUILD_MACHINE.findall(page.read_text(encoding="utf-8")), page


def test_every_page_instags_messages_point_at_exists():
    """Messages and --help say `the docs: guides/python.md`: each such page is in docs/."""
    import re

    root = Path(__file__).resolve().parents[2]
    pointed = {m for p in (root / "instag").rglob("*.py")
               for m in re.findall(r"the docs: ([\w/.-]+\.md)", p.read_text())}
    assert pointed and all((root / "docs" / page).is_file() for page in pointed), pointed
    assert not [p for p in (root / "instag").rglob("*.py") if "README:" in p.read_text()]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_the_documented_systemd_units_are_valid(tmp_path):
    """The nightly guide's service and timer, as a user saves them, pass `systemd-analyze
    verify` (a calendar systemd cannot parse makes it refuse the timer)."""
    page = (ROOT / "docs" / "guides" / "nightly.md").read_text()
    service, timer = [m.group(0).split("\n", 1)[1].rsplit("```", 1)[0]
                      for m in FENCE.finditer(page) if m.group(0).startswith("```ini")]
    instag = Path(sys.executable).with_name("instag")  # the documented path, on this machine
    (tmp_path / "instag-tag.service").write_text(
        service.replace("/opt/instag/.venv/bin/instag", str(instag)))
    (tmp_path / "instag-tag.timer").write_text(timer)
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", "instag-tag.timer",
                           "instag-tag.service"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "--quiet" in service  # a nightly run mails only news
