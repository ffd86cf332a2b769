"""The codec endpoint for the Temporal Web UI and CLI (`corpsale codec-server`): it decodes (and
encodes) payloads with the product's key, following Temporal's codec server protocol (POST
/encode and /decode, Payloads as protobuf JSON). In the Web UI, set the codec server to its
address (the embedded stack does it when a key is configured); the key never leaves it.

It decrypts for whoever reaches it, so it answers only requests that name one of its hosts (the
address it listens on, the loopback names on a loopback address, and `--allowed-host`): a page
whose name resolves to 127.0.0.1 (DNS rebinding) names its own host. A request from a browser
page is answered only for the Web UI's origins (`--ui-origin`); a page elsewhere could otherwise
post a CORS-safelisted request and have it processed, even if it cannot read the answer.
Requests without an Origin (the Temporal CLI's --codec-endpoint, curl) are served.

What it cannot read is a 400 that names the problem: protobuf's JSON parser skips characters
that are not base64, so bytes fields are checked strictly first.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import hdrs, web
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payload, Payloads

from worker.codec import EncryptionCodec

Host = tuple[str, int | None]  # a lower-case name (IPv6 in brackets), and a port if given

HTTP_PORT = 80  # a Host header without a port names it: the endpoint speaks plain HTTP
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
ALL_INTERFACES = ("", "0.0.0.0", "::")
ADD_HOST = "add one with `corpsale codec-server --allowed-host HOST[:PORT]`"
ADD_ORIGIN = "add one with `corpsale codec-server --ui-origin URL`"
_HOST = re.compile(
    r"(?P<name>[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?|\[(?P<v6>[0-9a-f:.]+)\])"  # a name or address, [IPv6]
    r"(:(?P<port>[0-9]{1,5}))?"
)


def parse_host(text: str) -> Host:
    """`name`, `name:port`, `[IPv6]`, `[IPv6]:port` or a bare IPv6 address, as a Host header or
    `--allowed-host` names it; ValueError says what is wrong."""
    host = text.strip().lower()
    if host.count(":") > 1 and not host.startswith("["):
        host = f"[{host}]"  # a bare IPv6 address has no port
    found = _HOST.fullmatch(host)
    if found is None:
        raise ValueError(f"{text!r}: expected NAME, NAME:PORT, [IPv6] or [IPv6]:PORT")
    if found["v6"] is not None:
        try:
            ipaddress.IPv6Address(found["v6"])
        except ValueError:
            raise ValueError(f"{text!r}: not an IPv6 address") from None
    port = None if found["port"] is None else int(found["port"])
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"{text!r}: the port must be from 1 to 65535")
    return found["name"], port


def show_host(host: Host) -> str:
    name, port = host
    return name if port is None else f"{name}:{port}"


def default_hosts(host: str, port: int) -> list[str]:
    """The hosts a listener on `host`:`port` serves: its own address, and the loopback names when
    it listens on loopback (or on all interfaces, loopback included)."""
    own = [show_host((f"[{host}]" if ":" in host else host, port))] if host else []
    if host in ALL_INTERFACES or host == "localhost" or _is_loopback(host):
        own += [f"{name}:{port}" for name in LOOPBACK_NAMES]
    return list(dict.fromkeys(h.lower() for h in own))


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Undecodable(ValueError):
    """A request the endpoint cannot read; the text says what is wrong, for the 400."""


def read_payloads(body: bytes) -> Payloads:
    """The request's Payloads, with every bytes field strictly base64."""
    try:
        doc = json.loads(body)
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise Undecodable(f"the request is not JSON: {err}") from None
    if not isinstance(doc, dict):
        raise Undecodable('the request is not Payloads JSON: expected {"payloads": [...]}')
    items = doc.get("payloads")
    for number, item in enumerate(items if isinstance(items, list) else [], 1):
        if not isinstance(item, dict):
            continue  # protobuf's parser refuses it below
        _check_base64(item.get("data"), f"payload {number}: data")
        metadata = item.get("metadata")
        for key, value in metadata.items() if isinstance(metadata, dict) else ():
            _check_base64(value, f"payload {number}: metadata {key!r}")
    try:
        return json_format.ParseDict(doc, Payloads())
    except json_format.ParseError as err:
        raise Undecodable(f"the request is not Payloads JSON: {err}") from None


def _check_base64(value: Any, where: str) -> None:
    """As protobuf JSON has bytes: standard or URL-safe base64, padded or not; nothing else."""
    if value is None:
        return
    if not isinstance(value, str):
        raise Undecodable(f"{where} is not a base64 string")
    urlsafe = "-" in value or "_" in value
    padded = value + "=" * (-len(value) % 4)
    try:
        if "=" in value and len(value) % 4:
            raise ValueError("padding")
        base64.b64decode(padded, altchars=b"-_" if urlsafe else None, validate=True)
    except (binascii.Error, ValueError):
        raise Undecodable(f"{where} is not valid base64") from None


async def _each(
    work: Callable[[Sequence[Payload]], Awaitable[list[Payload]]], payloads: Sequence[Payload]
) -> list[Payload]:
    """`work` on each payload, so an error names the payload it is about."""
    done: list[Payload] = []
    for number, payload in enumerate(payloads, 1):
        try:
            done += await work([payload])
        except (ValueError, DecodeError) as err:  # WrongKey, a failed integrity check, a bad nonce
            raise Undecodable(f"payload {number}: {err or 'not a payload'}") from None
    return done


def build_app(codec: EncryptionCodec, *, ui_origins: Sequence[str], hosts: Sequence[str]) -> web.Application:
    """The endpoint, answering requests for `hosts` (HOST or HOST:PORT; a host without a port is
    served on any port) from `ui_origins` or from no origin."""
    served = [parse_host(h) for h in hosts]
    origins = [o.strip().rstrip("/").lower() for o in ui_origins]

    def serves(header: str | None) -> bool:
        if header is None:
            return False
        try:
            name, port = parse_host(header)
        except ValueError:
            return False
        return any(name == n and (p is None or p == (port or HTTP_PORT)) for n, p in served)

    def refusal(request: web.Request) -> web.Response | None:
        host, origin = request.headers.get(hdrs.HOST), request.headers.get(hdrs.ORIGIN)
        if not serves(host):
            shown = ", ".join(map(show_host, served))
            error = f"this codec endpoint serves {shown}, not the host {host!r}; {ADD_HOST}"
            return web.json_response({"error": error, "hosts": [show_host(h) for h in served]}, status=421)
        if origin is not None and origin.lower() not in origins:
            shown = ", ".join(origins)
            error = f"this codec endpoint answers the Web UI at {shown}, not {origin!r}; {ADD_ORIGIN}"
            return web.json_response({"error": error, "origins": origins}, status=403)
        return None

    @web.middleware
    async def admit(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        refused = refusal(request)
        if refused is not None:
            return refused
        response = await handler(request)
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None:  # one of `origins`, or it was refused
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = "POST"
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = "content-type,x-namespace,authorization"
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS] = "true"
            response.headers[hdrs.VARY] = hdrs.ORIGIN
        return response

    async def options(request: web.Request) -> web.Response:
        return web.Response()  # the preflight: `admit` adds the CORS headers

    def handler(
        work: Callable[[Sequence[Payload]], Awaitable[list[Payload]]],
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            try:
                result = Payloads(payloads=await _each(work, read_payloads(await request.read()).payloads))
            except Undecodable as err:
                return web.json_response({"error": str(err)}, status=400)
            return web.Response(text=json_format.MessageToJson(result), content_type="application/json")

        return handle

    # Temporal allows payloads of a few MiB, and the UI sends a run's payloads together.
    app = web.Application(client_max_size=64 * 2**20, middlewares=[admit])
    app.add_routes(
        [
            web.post("/encode", handler(codec.encode)),
            web.post("/decode", handler(codec.decode)),
            web.options("/encode", options),
            web.options("/decode", options),
        ]
    )
    return app


async def serve(
    codec: EncryptionCodec,
    *,
    host: str,
    port: int,
    ui_origins: Sequence[str],
    allowed_hosts: Sequence[str] = (),
) -> web.AppRunner:
    """Start serving for the hosts `host`:`port` answers to (`default_hosts`) and `allowed_hosts`;
    the caller stops it with `await runner.cleanup()`."""
    hosts = [*default_hosts(host, port), *allowed_hosts]
    runner = web.AppRunner(build_app(codec, ui_origins=ui_origins, hosts=hosts))
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
