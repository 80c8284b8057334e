"""Run the plait CLI in-process (``flows.cli.main``) and capture what a user would see.

In-process is equivalent to the ``plait`` console script for these checks: ``main`` is what
the script calls, it catches every exception itself, and argparse's exits are turned into
return codes. Tests that need a real process (a closed pipe, the console script) use
:func:`run_subprocess`.
"""
from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def run(*argv) -> Result:
    from flows.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:  # must not happen: main returns codes
            code = f"SystemExit({e.code})"
    return Result(code, out.getvalue(), err.getvalue())


def run_subprocess(*argv, env=None, timeout=300) -> Result:
    res = subprocess.run([sys.executable, "-m", "flows.cli", *map(str, argv)], capture_output=True, text=True,
                         env=env, timeout=timeout, cwd=REPO)
    return Result(res.returncode, res.stdout, res.stderr)
