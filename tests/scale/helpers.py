"""Helpers shared by the scale-out tests."""
from __future__ import annotations

from pathlib import Path


def client(api_url: str):
    """A sync Prefect client for ``api_url`` (``with client(url) as c:``)."""
    from contextlib import contextmanager

    @contextmanager
    def _open():
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            with get_client(sync_client=True) as c:
                yield c

    return _open()


def tiny_project(root: Path, n: int = 12, **extra) -> Path:
    """An image-only project (classic:color: no model to load) that runs end to end in seconds."""
    from synthetic import write_dataset

    from flows.config import EncoderConfig, FusionConfig, HeadConfig, ProjectConfig, SourceConfig

    write_dataset(root / "data", n=n)
    ProjectConfig(
        root=root,
        sources=(SourceConfig(name="synth", manifest="data/manifest.parquet", labels=("color", "topic")),),
        encoders=(EncoderConfig(modality="image", spec="classic:color"),),
        fusions=(FusionConfig(name="fused", inputs=("image",)),),
        heads=(HeadConfig(name="mtl", fusion="fused", tasks=("color",), hidden=8, max_epochs=3, baselines=False),),
        **extra,
    ).save()
    return root


def s3_keys(options: dict, prefix: str) -> list[str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=options["aws_endpoint"], aws_access_key_id="k", aws_secret_access_key="s",
                      region_name="us-east-1")
    keys, token = [], None
    while True:
        page = s3.list_objects_v2(Bucket="plait", Prefix=prefix, **({"ContinuationToken": token} if token else {}))
        keys += [o["Key"] for o in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            return keys
        token = page["NextContinuationToken"]
