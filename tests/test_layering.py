"""fusion/ and heads/ are pure: importing them must not pull in lancedb or prefect."""
import subprocess
import sys


def test_fusion_and_heads_import_without_io_libraries():
    code = ("import sys, fusion, heads; bad = [m for m in ('lancedb', 'prefect') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_store_imports_without_prefect():
    code = "import sys, store.db, store.search; sys.exit(1 if 'prefect' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
