"""What instag prints is safe to show: a file name is data, and what a terminal would act on in
it (escape sequences that recolour, retitle or write the clipboard; a carriage return that
overwrites the line) is shown escaped, never sent raw."""

import os
import subprocess
import sys

from instag.cli.console import terminal_safe

CLIPBOARD = "\x1b]52;c;aGVsbG8=\x07"  # OSC 52: "put this on the clipboard", where a terminal obeys


def test_control_characters_are_shown_escaped_and_text_is_kept():
    assert terminal_safe(f"song{CLIPBOARD}\r.wav") == "song\\x1b]52;c;aGVsbG8=\\x07\\x0d.wav"
    assert terminal_safe("Björk – Jóga\tlive\n") == "Björk – Jóga\tlive\n"


def test_a_failed_file_named_with_an_escape_sequence_is_reported_escaped(
        scoring_model, standin_vggish, standin_pca, tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / f"evil{CLIPBOARD}.wav").write_bytes(b"RIFF0000WAVEjunk")
    run = subprocess.run(
        [sys.executable, "-m", "instag", "tag", str(lib), "--out", str(tmp_path / "t.csv"),
         "--model", str(scoring_model), "--vggish", str(standin_vggish), "--pca",
         str(standin_pca), "--cache", str(tmp_path / "c.sqlite")],
        capture_output=True, env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    said = run.stdout + run.stderr
    assert run.returncode == 1, said
    assert b"\x1b" not in said and b"\x07" not in said
    assert b"evil\\x1b]52;c;aGVsbG8=\\x07.wav" in said
