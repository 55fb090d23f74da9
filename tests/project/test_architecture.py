"""The architecture is a contract: layers, no cycles, lazy heavy imports, extras that say so."""

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from instag.cli import app

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "tensorflow", "onnxruntime", "sklearn", "matplotlib", "ray", "pyarrow")


def test_the_import_contracts_in_pyproject_hold():
    """cli > provision > engines > outputs > tagging | learning > features > common; tagging
    and learning independent, and the two engines (import-linter; the contracts are in
    pyproject.toml)."""
    lint_imports = Path(sys.executable).parent / "lint-imports"
    if not lint_imports.is_file():
        pytest.skip("import-linter is not installed (the dev extra installs it)")
    out = subprocess.run([str(lint_imports), "--config",
                          str(ROOT / "pyproject.toml"), "--no-cache"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 kept, 0 broken" in out.stdout


def test_no_module_takes_part_in_an_import_cycle():
    """Function-level imports count too, so none can hide a cycle."""
    grimp = pytest.importorskip("grimp")  # import-linter
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

    assert instag.tag.__module__ == "instag.jobs.run"
    assert instag.learning.train_run.__module__ == "instag.learning.train"
    with pytest.raises(AttributeError):
        instag.no_such_name  # noqa: B018
    assert {"tag", "TagOptions", "FileResult", "BusyError"} <= set(dir(instag))
    with pytest.warns(DeprecationWarning, match="instag.learning.train_run"):
        assert instag.train_run is instag.learning.train_run  # the old name, for one release


def test_type_checkers_see_the_apis_real_types(tmp_path):
    """A script using the API, checked by mypy: the names have their real types (py.typed,
    TYPE_CHECKING imports), not Any."""
    api = pytest.importorskip("mypy.api")
    script = tmp_path / "use.py"
    script.write_text(
        "import instag\n"
        "run = instag.tag(['music'], instag.TagOptions(bag=10))\n"
        "for result in run:\n"
        "    reveal_type(result)\n"
        "    names: list[str] = result.instruments()\n"
        "reveal_type(instag.learning.Recipe)\n"
        "instag.tag(42)\n")
    out, _, _ = api.run([str(script), "--follow-imports=silent", "--ignore-missing-imports",
                         "--no-error-summary", "--cache-dir", str(tmp_path / "cache")])
    assert 'Revealed type is "instag.tagging.results.FileResult"' in out, out
    assert 'Revealed type is "def' in out and "instag.learning.train.Recipe" in out, out
    assert 'Argument 1 to "tag" has incompatible type "int"' in out, out
    import instag

    assert (Path(instag.__file__).parent / "py.typed").is_file()


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


MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60


def _sources():
    root = Path(__file__).resolve().parents[2]
    return [p for d in ("instag", "beetsplug") for p in sorted((root / d).rglob("*.py"))]


def test_no_module_is_over_400_lines():
    long = {str(p): n for p in _sources() if (n := len(p.read_text().splitlines()))
            > MAX_MODULE_LINES}
    assert long == {}


def test_no_function_body_is_over_60_lines():
    """Signature and docstring excluded: the body a reader has to hold in mind."""
    import ast

    long = {}
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            body = node.body[1:] if (isinstance(node.body[0], ast.Expr) and isinstance(
                node.body[0].value, ast.Constant) and isinstance(node.body[0].value.value,
                                                                  str)) else node.body
            if body and (n := body[-1].end_lineno - body[0].lineno + 1) > MAX_FUNCTION_LINES:
                long[f"{path.name}:{node.name}"] = n
    assert long == {}
