"""boto3 clients for a moto server of a test's own (tests/sandbox/conftest.py `moto_url`)."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config


def moto_client(url: str, service: str, region: str, read_timeout: float = 20) -> Any:
    """One attempt per call and short timeouts: a test sees the answer moto gave."""
    return boto3.client(
        service,
        region_name=region,
        endpoint_url=url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=read_timeout),
    )
