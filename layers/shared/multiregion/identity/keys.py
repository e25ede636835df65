"""The residency registry's key: a secret HMAC key, and the registry key of a username.

The registry never holds a username in the clear, nor an unkeyed hash of it (a list of
likely usernames would reverse that): its key is HMAC-SHA256 of the lower-cased username
(the user pool is case-insensitive) under a secret from Parameter Store. The parameter is
a SecureString with the same value in every app region (each region reads its own copy; a
different value would key the same user differently there). It is read with decryption
through Powertools parameters and cached for a few minutes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading

from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

from multiregion import aws
from multiregion.settings import ConfigurationError, required_env

ENV_VAR = "RESIDENCY_KEY_PARAMETER"
MIN_KEY_BYTES = 32  # HMAC-SHA256's block of entropy; a shorter key is a guessable key
MAX_AGE_SECONDS = 300  # a rotated key reaches every container within five minutes

_lock = threading.Lock()
_providers: dict[tuple[str, str | None], parameters.SSMProvider] = {}


def _provider(region: str) -> parameters.SSMProvider:
    """One provider (and its cache) per region and endpoint: tests and the sandbox run
    several regions in one process, and Powertools' default provider would keep the first."""
    key = (region, os.environ.get("AWS_ENDPOINT_URL"))
    with _lock:
        found = _providers.get(key)
        if found is None:
            found = parameters.SSMProvider(boto3_client=aws.client("ssm", region))
            _providers[key] = found
    return found


def parameter_name() -> str:
    return required_env(ENV_VAR)


def secret(region: str) -> bytes:
    """This region's copy of the key; a ConfigurationError when it is missing or short."""
    name = parameter_name()
    try:
        value = _provider(region).get(name, decrypt=True, max_age=MAX_AGE_SECONDS)
    except GetParameterError as error:
        raise ConfigurationError(f"the residency key parameter {name} cannot be read: {error}") from error
    key = value.encode() if isinstance(value, str) else value
    if not isinstance(key, bytes) or len(key) < MIN_KEY_BYTES:
        # Never the value, nor its length: the logs are no place for facts about a secret.
        raise ConfigurationError(
            f"the residency key in {name} is shorter than {MIN_KEY_BYTES} bytes: "
            f"put a random value of at least {MIN_KEY_BYTES} bytes there"
        )
    return key


def user_key(username: str, key: bytes) -> str:
    """The registry key of `username`: hex HMAC-SHA256 of its lower-cased form."""
    return hmac.new(key, username.lower().encode(), hashlib.sha256).hexdigest()


def clear() -> None:
    """Forget the providers and their cached keys (tests that change the key call this)."""
    with _lock:
        _providers.clear()
