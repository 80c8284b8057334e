"""Object-store access outside LanceDB (artifacts, index files), from the same options.

``[store.storage_options]`` in plait.toml is passed to LanceDB as is (its keys follow the
``object_store`` crate: ``aws_endpoint``, ``aws_access_key_id``, ``aws_secret_access_key``,
``aws_region``, ``allow_http``); this module maps the same keys onto pyarrow's S3 filesystem,
so one set of options reaches every file plait keeps under the store URI.
"""
from __future__ import annotations

import os
from urllib.parse import urlparse

from store.errors import ConfigError


def _opt(options: dict, *names: str, env: str | None = None):
    for n in names:
        if options.get(n) not in (None, ""):
            return str(options[n])
    return os.environ.get(env) if env else None


def filesystem(uri: str, options: dict | None = None):
    """``(pyarrow FileSystem, base path without scheme)`` for an object-store URI."""
    from pyarrow import fs as pafs

    options = options or {}
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
        ), base
    if parsed.scheme in ("gs", "gcs"):
        return pafs.GcsFileSystem(), base
    raise ConfigError(f"store URI {uri!r}: scheme {parsed.scheme!r} is not supported for artifacts",
                      fix="use a local folder or s3://bucket/prefix (gs:// also works)")
