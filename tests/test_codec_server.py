"""The codec endpoint (`corpsale codec-server`, and the embedded stack's): it answers only the
hosts it serves and the Web UI's origin, so a page elsewhere cannot read decrypted payloads
through it (DNS rebinding, cross-origin posts); and what it cannot decode or decrypt is a 400
that names the problem, never a 200 with an empty or wrong payload."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from temporalio.api.common.v1 import Payload

from worker import codec_server
from worker.codec import EncryptionCodec, new_key, parse_key

UI = "http://localhost:8233"
PLAIN = {"metadata": {"encoding": base64.b64encode(b"json/plain").decode()}, "data": "eyJhIjogMX0="}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Endpoint:
    codec: EncryptionCodec
    port: int

    async def post(
        self,
        path: str,
        body: object,
        *,
        host: str | None = None,
        origin: str | None = UI,
        method: str = "POST",
    ) -> Reply:
        """A request as the Web UI (or a hostile page, with `host`/`origin`) sends it."""
        headers = {"Content-Type": "application/json", "Host": host or f"127.0.0.1:{self.port}"}
        if origin is not None:
            headers["Origin"] = origin
        data = body if isinstance(body, str) else json.dumps(body)
        async with (
            aiohttp.ClientSession() as http,
            http.request(
                method, f"http://127.0.0.1:{self.port}{path}", data=data, headers=headers
            ) as response,
        ):
            text = await response.text()
            return Reply(response.status, dict(response.headers), json.loads(text) if text else {})

    async def decode(self, *payloads: dict[str, Any], **how: Any) -> Reply:
        return await self.post("/decode", {"payloads": list(payloads)}, **how)

    async def encrypted(self, data: bytes = b'{"customer": "Initech"}') -> dict[str, Any]:
        """A payload as the worker writes it to Temporal, in the codec protocol's JSON."""
        [payload] = await self.codec.encode([Payload(metadata={"encoding": b"json/plain"}, data=data)])
        return _as_json(payload)


def _as_json(payload: Payload) -> dict[str, Any]:
    return {
        "metadata": {k: base64.b64encode(v).decode() for k, v in payload.metadata.items()},
        "data": base64.b64encode(payload.data).decode(),
    }


@asynccontextmanager
async def _serving(allowed_hosts: Sequence[str] = (), host: str = "127.0.0.1") -> AsyncIterator[Endpoint]:
    codec = EncryptionCodec(parse_key(new_key()))
    port = _free_port()
    extra: dict[str, Any] = {"allowed_hosts": allowed_hosts} if allowed_hosts else {}
    runner = await codec_server.serve(codec, host=host, port=port, ui_origins=[UI], **extra)
    try:
        yield Endpoint(codec, port)
    finally:
        await runner.cleanup()


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    async with _serving() as endpoint:
        yield endpoint


# Hosts and origins ----------------------------------------------------------------------------


async def test_a_request_naming_another_host_is_refused_with_the_hosts_it_serves(endpoint: Endpoint) -> None:
    # A page on evil.example that resolves its name to 127.0.0.1 sends this, without an Origin
    # header when it is same-origin to the browser.
    secret = await endpoint.encrypted()
    for origin in (None, "http://evil.example:8081", UI):
        reply = await endpoint.decode(secret, host=f"evil.example:{endpoint.port}", origin=origin)
        assert reply.status in (421, 403), reply
        assert "Initech" not in json.dumps(reply.body)
        assert f"127.0.0.1:{endpoint.port}" in reply.body["error"]
        assert "--allowed-host" in reply.body["error"]
        assert f"localhost:{endpoint.port}" in reply.body["hosts"]
    # Nor does it answer a preflight for it.
    reply = await endpoint.post("/decode", "", method="OPTIONS", host=f"evil.example:{endpoint.port}")
    assert reply.status in (421, 403) and "Access-Control-Allow-Origin" not in reply.headers


async def test_on_a_loopback_address_it_serves_the_loopback_names_with_its_port(endpoint: Endpoint) -> None:
    secret = await endpoint.encrypted()
    for host in ("127.0.0.1", "localhost", "LocalHost", "[::1]"):
        reply = await endpoint.decode(secret, host=f"{host}:{endpoint.port}", origin=None)
        assert reply.status == 200, (host, reply)
        assert b"Initech" in base64.b64decode(reply.body["payloads"][0]["data"])
    for host in ("localhost", f"localhost:{endpoint.port + 1}", f"127.0.0.1.evil.example:{endpoint.port}"):
        assert (await endpoint.decode(secret, host=host, origin=None)).status in (421, 403), host


async def test_an_allowed_host_is_served_as_well() -> None:
    async with _serving(allowed_hosts=["codec.example.com", "[fd00::1]:9000"]) as endpoint:
        secret = await endpoint.encrypted()
        for host in (
            "codec.example.com",
            "codec.example.com:443",
            f"127.0.0.1:{endpoint.port}",
            "[FD00::1]:9000",
        ):
            assert (await endpoint.decode(secret, host=host)).status == 200, host
        for host in ("example.com", "[fd00::1]:9001", "evil.example"):
            assert (await endpoint.decode(secret, host=host)).status in (421, 403), host


async def test_on_all_interfaces_it_serves_the_loopback_names_and_the_allowed_hosts() -> None:
    async with _serving(allowed_hosts=["sales-box.internal"], host="0.0.0.0") as endpoint:
        secret = await endpoint.encrypted()
        for host in (f"localhost:{endpoint.port}", f"sales-box.internal:{endpoint.port}"):
            assert (await endpoint.decode(secret, host=host)).status == 200, host
        assert (await endpoint.decode(secret, host=f"evil.example:{endpoint.port}")).status in (421, 403)


async def test_the_web_ui_gets_cors_headers_and_any_other_origin_is_refused(endpoint: Endpoint) -> None:
    secret = await endpoint.encrypted()
    reply = await endpoint.decode(secret, origin=UI)
    assert reply.status == 200
    assert reply.headers["Access-Control-Allow-Origin"] == UI
    assert "Origin" in reply.headers["Vary"]
    preflight = await endpoint.post("/decode", "", method="OPTIONS", origin=UI)
    assert preflight.status == 200 and preflight.headers["Access-Control-Allow-Origin"] == UI
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]

    # A page elsewhere may post without a preflight (a "simple" request): it is refused, not only
    # left without CORS headers, so nothing is decrypted or encrypted for it.
    for origin in ("https://evil.example", "http://localhost:9999", "null"):
        for method, path in (("POST", "/decode"), ("POST", "/encode"), ("OPTIONS", "/decode")):
            reply = await endpoint.post(path, {"payloads": [secret]}, method=method, origin=origin)
            assert reply.status == 403, (origin, method, path, reply)
            assert "Access-Control-Allow-Origin" not in reply.headers
            assert "Initech" not in json.dumps(reply.body)
            assert UI in reply.body["error"] and "--ui-origin" in reply.body["error"]

    # The Temporal CLI (--codec-endpoint) and curl send no Origin: served.
    assert (await endpoint.decode(secret, origin=None)).status == 200


# What it cannot decode ------------------------------------------------------------------------


async def test_invalid_base64_is_a_400_naming_the_field(endpoint: Endpoint) -> None:
    secret = await endpoint.encrypted()
    stray = {**secret, "data": secret["data"][:8] + "*" + secret["data"][8:]}  # decrypts if "*" is skipped
    cases: list[tuple[dict[str, Any], str]] = [
        ({"data": "!!!!"}, "data"),
        ({"metadata": {"encoding": "%%%"}, "data": "eyJ9"}, "encoding"),
        (stray, "data"),
        ({**secret, "data": secret["data"] + "A"}, "data"),  # a length no base64 has
    ]
    for payload, field in cases:
        reply = await endpoint.decode(PLAIN, payload)
        assert reply.status == 400, (payload, reply)
        assert "base64" in reply.body["error"] and field in reply.body["error"], reply.body
        assert "payloads" not in reply.body
        assert reply.headers["Access-Control-Allow-Origin"] == UI  # the UI can show why
    reply = await endpoint.post("/encode", {"payloads": [{"data": "@@@@"}]})
    assert reply.status == 400 and "base64" in reply.body["error"]


async def test_a_body_that_is_not_payloads_json_is_a_400(endpoint: Endpoint) -> None:
    for body in ("{oops", "[]", '"payloads"', '{"payloads": {}}', '{"payloads": [1]}', '{"other": []}'):
        reply = await endpoint.post("/decode", body)
        assert reply.status == 400, (body, reply)
        assert reply.body["error"], body


async def test_a_payload_encrypted_with_another_key_is_a_400_naming_the_keys(endpoint: Endpoint) -> None:
    theirs = EncryptionCodec(parse_key(new_key()))
    [payload] = await theirs.encode([Payload(metadata={"encoding": b"json/plain"}, data=b'"x"')])
    reply = await endpoint.decode(await endpoint.encrypted(), _as_json(payload))
    assert reply.status == 400, reply
    error = reply.body["error"]
    assert "payload 2" in error and theirs.key_id in error and endpoint.codec.key_id in error


async def test_a_tampered_payload_is_a_400_naming_the_payload(endpoint: Endpoint) -> None:
    secret = await endpoint.encrypted()
    data = bytearray(base64.b64decode(secret["data"]))
    flipped = bytes(data[:20]) + bytes([data[20] ^ 1]) + bytes(data[21:])
    key_id = secret["metadata"]["encryption-key-id"]
    cases: list[tuple[dict[str, Any], str]] = [
        ({**secret, "data": base64.b64encode(flipped).decode()}, "integrity"),
        ({**secret, "data": base64.b64encode(bytes(data[:5])).decode()}, ""),  # shorter than a nonce
        ({**secret, "data": ""}, ""),
        ({**secret, "metadata": {**secret["metadata"], "encryption-key-id": "/w=="}}, ""),  # not text
        ({**secret, "metadata": {"encoding": secret["metadata"]["encoding"]}}, "key"),  # key id removed
    ]
    for tampered, why in cases:
        reply = await endpoint.decode(PLAIN, tampered)
        assert reply.status == 400, (tampered, reply)
        assert "payload 2" in reply.body["error"] and why in reply.body["error"], reply.body
    assert key_id  # the untouched payload still decodes:
    assert (await endpoint.decode(PLAIN, secret)).status == 200


async def test_a_payload_round_trips_through_encode_and_decode(endpoint: Endpoint) -> None:
    original = {
        "metadata": {"encoding": base64.b64encode(b"json/plain").decode()},
        "data": base64.b64encode(b'{"customer": "Initech", "need": "fleet"}').decode(),
    }
    encoded = await endpoint.post("/encode", {"payloads": [original, PLAIN]})
    assert encoded.status == 200
    assert encoded.headers["Access-Control-Allow-Origin"] == UI
    [sealed, _] = encoded.body["payloads"]
    assert b"Initech" not in base64.b64decode(sealed["data"])
    decoded = await endpoint.decode(*encoded.body["payloads"])
    assert decoded.status == 200
    assert decoded.body["payloads"] == [original, PLAIN]
    # URL-safe base64 and base64 without padding are protobuf JSON too (the Go CLI may send them).
    unpadded = {**sealed, "data": sealed["data"].rstrip("=").replace("+", "-").replace("/", "_")}
    assert (await endpoint.decode(unpadded)).body["payloads"] == [original]


# The command ------------------------------------------------------------------------------------


async def test_the_command_serves_the_hosts_it_is_given_and_refuses_a_malformed_one() -> None:
    port, key = _free_port(), new_key()
    env = {**os.environ, "CORPSALE_ENCRYPTION_KEY": key}
    args = ["-m", "starter.cli", "codec-server", "--port", str(port), "--allowed-host", "codec.example.com"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        started = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert f"http://127.0.0.1:{port}" in started and "codec.example.com" in started, started
        endpoint = Endpoint(EncryptionCodec(parse_key(key)), port)
        secret = await endpoint.encrypted()
        assert (await endpoint.decode(secret, host="codec.example.com", origin=None)).status == 200
        assert (await endpoint.decode(secret, host=f"evil.example:{port}", origin=None)).status in (421, 403)
    finally:
        proc.terminate()
        await proc.wait()

    bad = await asyncio.create_subprocess_exec(
        sys.executable,
        *args[:-1],
        "codec.example.com:http",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(bad.communicate(), 30)
    assert bad.returncode == 1 and "--allowed-host" in err.decode() and "Traceback" not in err.decode()
