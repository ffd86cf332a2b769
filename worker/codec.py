"""Payload encryption (optional): with CORPSALE_ENCRYPTION_KEY set, every payload the product
hands to Temporal (workflow inputs, commands, activity data, results, summaries) is encrypted with
AES-256-GCM before it leaves the process, so Temporal's history holds no readable customer data.
The Web UI shows the data through the codec endpoint (`corpsale codec-server`), which holds the
key; without it the UI shows encrypted payloads.

The key is 32 random bytes in base64; `corpsale encryption-key` makes one.
Each payload names the key's id (a hash of the key), so a wrong key is reported as such.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes, PayloadCodec

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12


def parse_key(text: str) -> bytes:
    """The key from its base64 text; ValueError says what is wrong with it."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("CORPSALE_ENCRYPTION_KEY is not base64") from None
    if len(key) != 32:
        raise ValueError(f"CORPSALE_ENCRYPTION_KEY must be 32 bytes (AES-256), not {len(key)}")
    return key


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"corpsale payload key\0" + key).hexdigest()[:16]


class WrongKey(ValueError):
    """A payload this key cannot decrypt; the text says which key it needs."""


NO_KEY = "the process's data is encrypted: set CORPSALE_ENCRYPTION_KEY to the key the worker encrypts with"


def is_encrypted_without_key(err: BaseException) -> bool:
    """The SDK's error for an encrypted payload read without the codec."""
    return isinstance(err, KeyError) and ENCODING.decode() in str(err)


class EncryptionCodec(PayloadCodec):
    def __init__(self, key: bytes) -> None:
        super().__init__()
        self._aead = AESGCM(key)
        self.key_id = key_id(key)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._decrypt(p) for p in payloads]

    def _encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        data = nonce + self._aead.encrypt(nonce, payload.SerializeToString(), None)
        return Payload(metadata={"encoding": ENCODING, KEY_ID: self.key_id.encode()}, data=data)

    def _decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # written before encryption was switched on
        found = payload.metadata.get(KEY_ID, b"").decode()
        if found != self.key_id:
            raise WrongKey(
                f"a payload was encrypted with key {found!r}, not with the configured key {self.key_id!r}:"
                " set CORPSALE_ENCRYPTION_KEY to the key it was written with"
            )
        try:
            plain = self._aead.decrypt(payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:], None)
        except InvalidTag:
            raise ValueError(
                "a payload failed its integrity check: it was altered, or the key is wrong"
            ) from None
        decoded = Payload()
        decoded.ParseFromString(plain)
        return decoded


def data_converter(key_text: str | None) -> DataConverter:
    """The product's data converter: pydantic JSON, encrypted when a key is given (failure
    messages and stack traces too)."""
    if not key_text:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(parse_key(key_text)),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()
