"""`corpsale`: start and drive corporate sale processes, and look at opportunities.

Commands go to the process as Temporal updates, so each answers with the new state or a clear
refusal. Reads of opportunities come from PostgreSQL. Errors are one line and a non-zero exit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from starter import schemas
from starter.common import CliError, add_command, temporal, with_db
from starter.output import print_json


async def cmd_schema(args: argparse.Namespace) -> None:
    try:
        written = schemas.write(args.out)
    except OSError as err:
        raise CliError(
            f"cannot write the schemas to {err.filename or args.out}: {err.strerror or err};"
            " give --out a folder you can write (it is created if missing)"
        ) from None
    for path in written:
        print(path)


async def cmd_check(args: argparse.Namespace) -> int:
    from starter.check import check
    from workflows import patches

    client = await temporal()
    report = await with_db(lambda conn: check(client, conn, args.opportunities or None))
    if args.json:
        print_json(report.as_json())
    else:
        for v in report.violations:
            print(f"{v.opportunity_id}: {v.kind}: {v.detail}")
        old = [
            f"{patch} {report.old_branches[patch]}" for patch in patches.ALL if patch in report.old_branches
        ]
        print(
            f"old branches in open runs: {', '.join(old)} (docs/versioning.md)"
            if old
            else "no open run takes the old branch of a patch (docs/versioning.md)"
        )
        totals = ", ".join(f"{n} {kind}" for kind, n in sorted(report.totals().items()))
        print(
            f"checked {report.opportunities} opportunities, {report.runs} runs:"
            f" {len(report.violations)} violations" + (f" ({totals})" if totals else "")
        )
    return 1 if report.violations else 0


def cmd_dev(args: argparse.Namespace) -> int:
    from worker.config import current
    from worker.stack import run_stack

    code: int = run_stack(current())
    return code


def cmd_worker(args: argparse.Namespace) -> int:
    from worker.main import main as worker_main

    worker_main()
    return 0


def cmd_encryption_key(args: argparse.Namespace) -> int:
    from worker.codec import new_key

    print(new_key())
    return 0


async def cmd_codec_server(args: argparse.Namespace) -> None:
    """Serve the codec endpoint with the key in CORPSALE_ENCRYPTION_KEY until Ctrl-C."""
    from worker import codec_server
    from worker.codec import EncryptionCodec, parse_key
    from worker.config import current

    settings = current()
    if settings.encryption_key is None:
        raise CliError("set CORPSALE_ENCRYPTION_KEY to the key the worker encrypts with")
    codec = EncryptionCodec(parse_key(settings.encryption_key.get_secret_value()))
    origins = args.ui_origin or [
        f"http://localhost:{settings.ui_port}",
        f"http://127.0.0.1:{settings.ui_port}",
    ]
    extra = args.allowed_host or []
    for host in extra:
        try:
            codec_server.parse_host(host)
        except ValueError as err:
            raise CliError(f"--allowed-host {err}") from None
    try:
        runner = await codec_server.serve(
            codec, host=args.host, port=args.port, ui_origins=origins, allowed_hosts=extra
        )
    except OSError as err:
        raise CliError(f"cannot listen on {args.host}:{args.port}: {err.strerror}") from None
    hosts = [*codec_server.default_hosts(args.host, args.port), *extra]
    print(
        f"codec endpoint on http://{hosts[0]} for {', '.join(origins)};"
        f" answers to {', '.join(hosts)}; key {codec.key_id}",
        flush=True,  # a line for whoever waits for it on a pipe
    )
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def build_parser() -> argparse.ArgumentParser:

    parser = argparse.ArgumentParser(prog="corpsale", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_: str, **kinds: bool) -> argparse.ArgumentParser:
        return add_command(sub, name, help_, **kinds)

    command(
        "dev", "run the whole stack: Temporal dev server and UI, PostgreSQL, the worker", json_out=False
    ).set_defaults(run=cmd_dev)
    command("worker", "run a worker against TEMPORAL_ADDRESS and DATABASE_URL", json_out=False).set_defaults(
        run=cmd_worker
    )

    command("encryption-key", "print a new key for CORPSALE_ENCRYPTION_KEY", json_out=False).set_defaults(
        run=cmd_encryption_key
    )
    p = command("codec-server", "serve the codec endpoint the Web UI decodes payloads with", json_out=False)
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=8081, help="the port to listen on (8081)")
    p.add_argument(
        "--ui-origin",
        action="append",
        metavar="URL",
        help="the Web UI's origin (repeatable; default: the local UI)",
    )
    p.add_argument(
        "--allowed-host",
        action="append",
        metavar="HOST[:PORT]",
        help="another host name the endpoint answers to, as clients' Host header names it (repeatable;"
        " without a port, on any port); it always answers to its --host:--port, and to"
        " localhost/127.0.0.1/[::1] with --port on a loopback address or 0.0.0.0",
    )
    p.set_defaults(run=cmd_codec_server)

    p = command("check", "compare every process run with the database; exit 1 on a violation")
    p.add_argument("opportunities", nargs="*", metavar="OPPORTUNITY_ID", help="default: all")
    p.set_defaults(run=cmd_check)

    p = command("schema", "write the JSON Schemas of the public contract", json_out=False)
    p.add_argument("--out", default="docs/schemas", help="the folder to write them to (docs/schemas)")
    p.set_defaults(run=cmd_schema)

    from starter import (
        access,
        bulk,
        center,
        definitions,
        demo,
        events,
        forecast,
        leads,
        lookups,
        opportunities,
        process,
        processes,
        report,
        teams,
        webhooks,
    )

    process.add_commands(sub)
    opportunities.add_commands(sub)
    forecast.add_commands(sub)
    events.add_commands(sub)
    webhooks.add_commands(sub)
    center.add_commands(sub)
    access.add_commands(sub)
    report.add_commands(sub)
    demo.add_commands(sub)
    leads.add_commands(sub)
    lookups.add_commands(sub)
    definitions.add_commands(sub)
    processes.add_commands(sub)
    teams.add_commands(sub)
    bulk.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from worker.codec import NO_KEY, WrongKey, is_encrypted_without_key
    from worker.config import current, invalid

    try:
        current()  # the settings, read once: the parser's defaults come from them
    except ValidationError as err:
        print(f"corpsale: invalid setting in the environment: {invalid(err)}", file=sys.stderr)
        return 1
    args = build_parser().parse_args(argv)
    try:
        result = args.run(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except CliError as err:
        print(f"corpsale: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except (KeyError, WrongKey) as err:  # a payload it cannot read
        if isinstance(err, WrongKey) or is_encrypted_without_key(err):
            print(f"corpsale: {err if isinstance(err, WrongKey) else NO_KEY}", file=sys.stderr)
            return 1
        raise


def run() -> None:
    """The console entry point."""
    from worker.process import exit_now

    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # the reader left (`| head`): not an error to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    exit_now(code)


if __name__ == "__main__":
    run()
