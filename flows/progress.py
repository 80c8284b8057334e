"""Progress bars that stay quiet where nobody is watching (tests, ``--json``, CI logs)."""
from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def enabled() -> bool:
    return os.environ.get("PLAIT_PROGRESS", "1") != "0"


def bar(total: int | None, desc: str, unit: str = "row"):
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled(), file=sys.stderr,
                dynamic_ncols=True, leave=True)
