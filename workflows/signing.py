"""Signed commands (R24): a registered service signs what it sends with its key, so that the
process can trust the actor it names. The signature is an HMAC-SHA256 over

    corpsale-v1 \n <workflow id> \n <command> \n <service> \n <signed_at as sent> \n <payload>

where <command> is the signal name (the same for the command's update), and <payload> is the
command's JSON object without `signature`, canonicalised by RFC 8785 (JSON Canonicalization
Scheme, libraries exist for most languages). Plain Python: the CLI, SaleClient and the worker
share it."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

import rfc8785

SCHEME = "corpsale-v1"
# How old a signature may be when the process reads it (a retry, a worker that was down).
MAX_AGE = timedelta(hours=24)
# How far ahead of the process's clock a signature may be dated (the signer's clock runs fast).
MAX_AHEAD = timedelta(minutes=5)


def message(workflow_id: str, command: str, payload: dict[str, Any]) -> bytes:
    signature = payload.get("signature")
    signed = signature if isinstance(signature, dict) else {}
    body = {k: v for k, v in payload.items() if k != "signature"}
    head = [SCHEME, workflow_id, command, str(signed.get("service", "")), str(signed.get("signed_at", ""))]
    return "\n".join(head).encode() + b"\n" + rfc8785.dumps(body)


def mac(secret: str, workflow_id: str, command: str, payload: dict[str, Any]) -> str:
    return hmac.new(secret.encode(), message(workflow_id, command, payload), hashlib.sha256).hexdigest()


def sign(
    payload: dict[str, Any],
    *,
    workflow_id: str,
    command: str,
    service: str,
    secret: str,
    at: datetime | None = None,
) -> dict[str, Any]:
    """The payload with its signature."""
    signed_at = (at or datetime.now(UTC)).astimezone(UTC).isoformat().replace("+00:00", "Z")
    unsigned = {**payload, "signature": {"service": service, "signed_at": signed_at}}
    code = mac(secret, workflow_id, command, unsigned)
    return {**payload, "signature": {"service": service, "signed_at": signed_at, "mac": code}}


def matches(secret: str, workflow_id: str, command: str, payload: dict[str, Any]) -> bool:
    given = payload.get("signature", {}).get("mac", "")
    return hmac.compare_digest(str(given), mac(secret, workflow_id, command, payload))


def parse_key(text: str) -> tuple[str, str]:
    """`SERVICE:SECRET` (CORPSALE_SERVICE_KEY) as a pair; ValueError if it is not one."""
    service, sep, secret = text.partition(":")
    if not sep or not service or not secret:
        raise ValueError("a service key is SERVICE:SECRET, as `corpsale services add` prints it")
    return service, secret
