"""Object-store access outside LanceDB (artifacts, index files), from the same options.

``[store.storage_options]`` in plait.toml is passed to LanceDB as is (its keys follow the
``object_store`` crate: ``aws_endpoint``, ``aws_access_key_id``, ``aws_secret_access_key``,
``aws_region``, ``allow_http``); this module maps the same keys onto pyarrow's S3 filesystem,
so one set of options reaches every file plait keeps under the store URI.

The folder helpers below are what artifacts and index files use: each retries transient
failures (:mod:`store.retry`) and is idempotent, so a retry never leaves a mix behind.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from store.errors import ConfigError
from store.retry import S3_ATTEMPTS, retry


def _opt(options: dict, *names: str, env: str | None = None):
    for n in names:
        if options.get(n) not in (None, ""):
            return str(options[n])
    return os.environ.get(env) if env else None


def filesystem(uri: str, options: dict | None = None):
    """``(pyarrow FileSystem, base path without scheme)`` for an object-store URI (one client
    per URI and options in a process: building an S3 client costs more than a small GET)."""
    return _filesystem(uri, tuple(sorted((k, str(v)) for k, v in (options or {}).items())))


@functools.lru_cache(maxsize=16)
def _filesystem(uri: str, frozen: tuple):
    from pyarrow import fs as pafs

    options = dict(frozen)
    parsed = urlparse(uri)
    base = (parsed.netloc + parsed.path).rstrip("/")
    if parsed.scheme in ("s3", "s3a"):
        endpoint = _opt(options, "aws_endpoint", "endpoint", "aws_endpoint_url", env="AWS_ENDPOINT_URL")
        scheme = None
        if endpoint:
            e = urlparse(endpoint)
            scheme, endpoint = (e.scheme or "https"), (e.netloc or e.path)
        return pafs.S3FileSystem(
            access_key=_opt(options, "aws_access_key_id", "access_key_id", env="AWS_ACCESS_KEY_ID"),
            secret_key=_opt(options, "aws_secret_access_key", "secret_access_key", env="AWS_SECRET_ACCESS_KEY"),
            session_token=_opt(options, "aws_session_token", "session_token", env="AWS_SESSION_TOKEN"),
            region=_opt(options, "aws_region", "region", env="AWS_REGION") or "us-east-1",
            endpoint_override=endpoint, scheme=scheme or "https",
            connect_timeout=10, request_timeout=60,
            retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=S3_ATTEMPTS),
        ), base
    if parsed.scheme in ("gs", "gcs"):
        return pafs.GcsFileSystem(), base
    raise ConfigError(f"store URI {uri!r}: scheme {parsed.scheme!r} is not supported for artifacts",
                      fix="use a local folder or s3://bucket/prefix (gs:// also works)")


# --- small objects and folders ---------------------------------------------------------------
def read_bytes(fs, path: str) -> bytes | None:
    """The object at ``path``, or None when there is none."""
    from pyarrow import fs as pafs

    def get():
        if fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with fs.open_input_stream(path) as f:
            return f.read()

    return retry(get, what=f"read {path}")


def write_bytes(fs, path: str, data: bytes) -> None:
    """Put one object (a single PUT on S3: readers see the old object or the new one)."""
    def put():
        with fs.open_output_stream(path) as out:
            out.write(data)

    retry(put, what=f"write {path}")


def read_json(fs, path: str) -> dict | None:
    data = read_bytes(fs, path)
    return None if data is None else json.loads(data)


def upload_dir(fs, local: Path, dest: str, skip: tuple[str, ...] = ()) -> None:
    """Every file under ``local`` (but the names in ``skip``) to ``dest/<relative path>``."""
    for p in sorted(Path(local).rglob("*")):
        if p.is_file() and p.name not in skip:
            write_bytes(fs, f"{dest}/{p.relative_to(local).as_posix()}", p.read_bytes())


def download_dir(fs, src: str, local: Path, extra: dict[str, bytes] | None = None) -> Path:
    """Everything under ``src`` (plus the ``extra`` files) into a fresh sibling of ``local``,
    renamed into place: a reader of ``local`` sees the old folder or the whole new one."""
    from pyarrow import fs as pafs

    local = Path(local)
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{local.name}.tmp-", dir=local.parent))
    try:
        infos = retry(fs.get_file_info, pafs.FileSelector(src, recursive=True), what=f"list {src}")
        for info in infos:
            if info.type == pafs.FileType.File:
                data = read_bytes(fs, info.path)
                if data is None:
                    raise FileNotFoundError(f"{info.path} vanished while it was downloaded")
                out = tmp / info.path[len(src) + 1:]
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(data)
        for name, data in (extra or {}).items():
            (tmp / name).write_bytes(data)
        replace_dir(tmp, local)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return local


def replace_dir(new: Path, target: Path) -> None:
    """Swap the folder ``new`` in at ``target`` (two renames; the old one is removed)."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}-{os.urandom(3).hex()}")
    try:
        target.rename(old)
    except FileNotFoundError:
        old = None
    try:
        new.rename(target)
    except OSError:  # another process put one in between our renames: theirs stands
        shutil.rmtree(new, ignore_errors=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def list_dirs(fs, path: str) -> list[str]:
    """Names of the folders directly under ``path`` (none when it does not exist)."""
    from pyarrow import fs as pafs

    infos = retry(fs.get_file_info, pafs.FileSelector(path, allow_not_found=True), what=f"list {path}")
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)


def delete_dir(fs, path: str) -> None:
    retry(fs.delete_dir, path, what=f"delete {path}")
