"""The architecture is a contract: layers, no cycles, lazy heavy imports, extras that say so."""

import subprocess
import sys
from pathlib import Path

import grimp
import pytest
from typer.testing import CliRunner

from instag.cli import app

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "tensorflow", "onnxruntime", "sklearn", "matplotlib", "ray", "pyarrow")


def test_the_import_contracts_in_pyproject_hold():
    """cli > provision > engines > outputs > tagging | learning > features > common; tagging
    and learning independent, and the two engines (import-linter; the contracts are in
    pyproject.toml)."""
    out = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--config",
                          str(ROOT / "pyproject.toml"), "--no-cache"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 kept, 0 broken" in out.stdout


def test_no_module_takes_part_in_an_import_cycle():
    """Function-level imports count too, so none can hide a cycle."""
    graph = grimp.build_graph("instag")
    cycles = [(m, n) for m in sorted(graph.modules)
              for n in graph.find_modules_directly_imported_by(m)
              if n != m and graph.chain_exists(importer=n, imported=m)]
    assert cycles == []


def test_importing_the_tagging_api_imports_no_heavy_library():
    code = ("import sys, instag; instag.tag, instag.TagOptions, instag.Embedder, instag.FileResult,"
            " instag.tag_on_ray;"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_public_api_names_resolve_lazily():
    import instag

    assert instag.tag.__module__ == "instag.engines.local.run"
    assert instag.train_run.__module__ == "instag.learning.train"
    with pytest.raises(AttributeError):
        instag.no_such_name  # noqa: B018


@pytest.mark.parametrize("missing, command", [
    ("torch", ["train", "--openmic", ".", "--out", "run", "--model", "att"]),
    ("matplotlib", ["plot", "tags.json"]),
])
def test_a_missing_extra_is_one_line_naming_the_pip_command(monkeypatch, tmp_path, missing,
                                                             command):
    from builders import random_openmic

    monkeypatch.setitem(sys.modules, missing, None)  # as if not installed
    monkeypatch.chdir(tmp_path)
    random_openmic(tmp_path)
    (tmp_path / "tags.json").write_text('{"files": [{"path": "a.wav", "status": "ok", '
                                        '"duration_s": 1.0, "instruments": [], "bags": [], '
                                        '"segments": {}}]}')
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    extra = "train" if missing == "torch" else "plot"
    assert f"pip install 'instag[{extra}]'" in result.output
    assert "Traceback" not in result.output
