"""Fail early, with the fix, when the disk cannot hold the virtual environment.

torch 2.14.1 (the build that imports beside torchvision here) brings ~5.5 GB of CUDA
libraries; pip otherwise dies half-way with "[Errno 28] No space left on device".
Usage: python3 .ci/check_disk.py VENV_DIR GIB_NEEDED
"""
import shutil
import sys
from pathlib import Path

venv, need_gib = Path(sys.argv[1]), float(sys.argv[2])
if (venv / ".plait-installed").exists() or (venv / "bin" / "python").exists():
    sys.exit(0)  # an update of an existing venv needs far less
probe = venv.resolve().parent
free_gib = shutil.disk_usage(probe).free / 2**30
if free_gib < need_gib:
    sys.exit(f"error: {free_gib:.1f} GiB free on {probe}, the virtual environment needs about {need_gib:.0f} GiB "
             f"(torch with its CUDA libraries).\nFix: free disk space (old clones' .venv folders are ~7 GB each), "
             f"or set VENV=/path/on/a/bigger/disk")
print(f"disk: {free_gib:.0f} GiB free for {venv} (needs about {need_gib:.0f})")
