"""What the CLI says when a command fails: one message and one fix, never a traceback.

Why: a traceback tells a user where plait broke, not what to do. :func:`explain` maps an
exception to ``(message, fix)``: plait's own errors carry both; the operating-system errors an
operator meets (a full disk, a read-only or unwritable folder, a missing file) and errors from
the libraries underneath (a corrupt artifact, a LanceDB I/O failure) get a specific sentence;
anything else is ``<Type>: <message> (run with -v for the traceback)``. Every message is
passed through :func:`flows.terminal.terminal_safe`: it may quote user data.
"""
from __future__ import annotations

import errno

from store.errors import PlaitError

GENERIC_FIX = "re-run with -v to see the traceback; if the input looks right, report it with that traceback"


def _first_line(e: BaseException, limit: int = 300) -> str:
    """The first line of a message, without the Rust source locations LanceDB appends."""
    import re

    text = str(e).strip()
    line = text.splitlines()[0] if text else ""
    for marker in (", location: Location", " location: Location", ", backtrace:"):
        line = line.split(marker)[0]
    line = re.sub(r",?\s*/\S*\.rs:\d+(:\d+)?.*$", "", line)  # ", /home/runner/…/object_reader.rs:335:56, …"
    return line[:limit]


def _where(e: OSError) -> str:
    return f": {e.filename}" if getattr(e, "filename", None) else ""


def _os_error(e: OSError) -> tuple[str, str] | None:
    code = e.errno
    if code == errno.ENOSPC or "No space left on device" in str(e):
        return (f"no space left on the device{_where(e)}",
                "free disk space (or point [store] uri at a larger disk), then re-run the command: committed "
                "batches are kept and the re-run does only what is missing")
    if code == errno.EDQUOT:
        return (f"disk quota exceeded{_where(e)}", "free space within your quota, then re-run the command")
    if code == errno.EROFS:
        return (f"the file system is read-only{_where(e)}", "point --project / [store] uri at a writable folder")
    if code in (errno.EACCES, errno.EPERM):
        return (f"permission denied{_where(e)}", "check that you may read and write that path, or use another "
                                                 "--project folder")
    if code == errno.ENOENT:
        return (f"no such file or folder{_where(e)}", "check the path (relative paths in plait.toml resolve "
                                                      "against the project folder)")
    if code == errno.EISDIR:
        return (f"a folder was found where a file was expected{_where(e)}", "point at a file")
    if code == errno.ENOTDIR:
        return (f"a file was found where a folder was expected{_where(e)}", "move the file away or point at a folder")
    if code in (errno.EMFILE, errno.ENFILE):
        return ("too many open files", "raise the limit (ulimit -n 4096) and re-run")
    if code == errno.ENOMEM:
        return ("out of memory", "close other programs or lower batch sizes, then re-run")
    return None


def _while_loading_artifact(e: BaseException) -> bool:
    """Whether ``e`` was raised while a saved fusion or head was being read back."""
    tb = e.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if "load" in code.co_name and code.co_filename.replace("\\", "/").endswith(_LOADERS):
            return True
        tb = tb.tb_next
    return False


_LOADERS = ("fusion/base.py", "heads/estimator.py", "heads/late.py", "store/artifacts.py")


def explain(e: BaseException) -> tuple[str, str]:
    """``(message, fix)`` for an exception that reached the command line."""
    if isinstance(e, PlaitError):
        return str(e), e.fix or GENERIC_FIX
    text = str(e)
    if isinstance(e, OSError):
        known = _os_error(e)
        if known:
            return known
    if "No space left on device" in text:
        return _os_error(OSError(errno.ENOSPC, text))
    if isinstance(e, MemoryError):
        return "out of memory", "lower batch sizes (or fit_rows of a fusion), or run on a machine with more memory"
    name = type(e).__name__
    module = type(e).__module__ or ""
    if name == "SafetensorError" or module.startswith("safetensors"):
        return (f"a saved artifact (fusion parameters or a head) is corrupt or unreadable: {_first_line(e)}",
                "re-create it: plait fuse NAME --refit, or plait train HEAD (plait status names them)")
    if isinstance(e, (ValueError, KeyError, TypeError)) and _while_loading_artifact(e):
        return (f"a saved artifact (fusion parameters or a head) is corrupt or unreadable: {name}: {_first_line(e)}",
                "re-create it: plait fuse NAME --refit, or plait train HEAD (plait status names them)")
    if "LanceError(IO)" in text and "Not found" in text:
        import re

        missing = re.search(r"Not found: (\S+?\.\w+)[,\s]", text)
        return (f"a file of the store is missing{': ' + missing.group(1) if missing else ''}",
                "the store was changed outside plait (files deleted or moved): restore it from a backup, or move "
                "the store folder away and re-run plait run to rebuild it")
    if "LanceError" in text or module.startswith(("lance", "lancedb")):
        return (f"the store could not be read or written ({name}): {_first_line(e)}",
                "check the store's disk and permissions (plait status); plait repair fixes repeated ids; "
                "re-run with -v for the details")
    return f"{name}: {_first_line(e)} (run with -v for the traceback)", GENERIC_FIX
