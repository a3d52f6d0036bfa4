"""The figure tables in README.md and docs/ agree with the results files they are rendered from."""
import subprocess
import sys

from conftest import ROOT


def test_tables_match_their_results_files():
    result = subprocess.run([sys.executable, str(ROOT / "docs" / "make_tables.py"), "--check"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
