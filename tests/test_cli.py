import subprocess
import sys


def test_help_imports_no_heavy_library():
    code = ("import sys; from typer.testing import CliRunner; from instag.cli import app; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0; "
            "print(sorted(m for m in ('torch', 'tensorflow', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
