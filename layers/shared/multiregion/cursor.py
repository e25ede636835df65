"""Opaque pagination cursors: a page's position (a few string fields), base64url-encoded.

Clients must not build or edit them; a cursor that does not decode to a position of the
expected shape is refused with 400 rather than passed to DynamoDB."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping

from multiregion.errors import BadRequestError

MAX_CURSOR_CHARS = 1024


def encode_cursor(last_key: Mapping[str, str]) -> str:
    raw = json.dumps(dict(last_key), separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def invalid_cursor() -> BadRequestError:
    return BadRequestError("cursor is not valid: pass back the nextCursor of a previous page unchanged")


def decode_cursor(cursor: str, expected_fields: frozenset[str]) -> dict[str, str]:
    invalid = invalid_cursor()
    if not cursor or len(cursor) > MAX_CURSOR_CHARS:
        raise invalid
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (binascii.Error, ValueError):
        raise invalid from None
    if (
        not isinstance(key, dict)
        or set(key) != expected_fields
        or not all(isinstance(v, str) and v for v in key.values())
    ):
        raise invalid
    return key
