"""The codec endpoint for the Temporal Web UI and CLI (`corpsale codec-server`): it decodes (and
encodes) payloads with the product's key, following Temporal's codec server protocol (POST
/encode and /decode, Payloads as protobuf JSON). In the Web UI, set the codec server to its
address (the embedded stack does it when a key is configured); the key never leaves it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from aiohttp import hdrs, web
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from worker.codec import EncryptionCodec


def build_app(codec: EncryptionCodec, *, ui_origins: Sequence[str]) -> web.Application:
    def cors(request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None and origin in ui_origins:
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = "POST"
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = "content-type,x-namespace,authorization"
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS] = "true"

    async def options(request: web.Request) -> web.Response:
        response = web.Response()
        cors(request, response)
        return response

    def handler(
        work: Callable[[Sequence[Payload]], Awaitable[list[Payload]]],
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            try:
                payloads = json_format.Parse(await request.read(), Payloads())
                result = Payloads(payloads=await work(payloads.payloads))
            except (json_format.ParseError, ValueError) as err:
                response = web.json_response({"error": str(err)}, status=400)
            else:
                response = web.Response(
                    text=json_format.MessageToJson(result), content_type="application/json"
                )
            cors(request, response)
            return response

        return handle

    # Temporal allows payloads of a few MiB, and the UI sends a run's payloads together.
    app = web.Application(client_max_size=64 * 2**20)
    app.add_routes(
        [
            web.post("/encode", handler(codec.encode)),
            web.post("/decode", handler(codec.decode)),
            web.options("/encode", options),
            web.options("/decode", options),
        ]
    )
    return app


async def serve(codec: EncryptionCodec, *, host: str, port: int, ui_origins: Sequence[str]) -> web.AppRunner:
    """Start serving; the caller stops it with `await runner.cleanup()`."""
    runner = web.AppRunner(build_app(codec, ui_origins=ui_origins))
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
