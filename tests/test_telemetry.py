"""Telemetry and payload encryption: the worker's Prometheus endpoint serves the SDK's metrics and
the product's counters with the right values after a scripted run; with an encryption key the
history in Temporal holds no readable customer data while the process runs as before, and the
codec endpoint decodes it for the Web UI; log lines name their opportunity."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import socket
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from temporalio.client import Client

from starter.client import CommandRefused, SaleClient
from tests.helpers import Sale, eventually, journal_settled
from worker import codec_server, telemetry
from worker.codec import EncryptionCodec, data_converter, new_key, parse_key
from worker.main import serving
from workflows.contract import AddTask, ChangeStage, CompleteTask, NewOpportunity, UpdateOpportunity


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _scrape(port: int) -> dict[str, float]:
    """corpsale_* counters summed over their labels, and how many temporal_* series there are."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values: dict[str, float] = defaultdict(float)
    for line in text.splitlines():
        found = re.match(r"^(\w+)(\{(.*)\})? ([0-9.e+-]+)$", line)
        if found is None:
            continue
        name, labels, value = found.group(1), found.group(3) or "", float(found.group(4))
        if name.startswith("corpsale_"):
            command = re.search(r'command="(\w+)",?.*via="(\w+)"', labels)
            key = f"{name}[{command.group(1)}/{command.group(2)}]" if command else name
            values[key] += value
        elif name.startswith("temporal_"):
            values["temporal series"] += 1
    return values


@asynccontextmanager
async def _worker_of(sale: Sale, client: Client, name: str) -> AsyncIterator[tuple[SaleClient, str]]:
    """A worker on a queue of its own for `client` (its runtime, converter or interceptors), and
    an opportunity id to drive there."""
    queue = f"corpsale-{name}-{uuid.uuid4()}"
    async with serving(client, sale.pool, task_queue=queue):
        yield SaleClient(client, queue), f"opp-{uuid.uuid4().hex[:8]}"


async def _start_and_complete_one(sale_client: SaleClient, opp: str) -> None:
    await sale_client.start(opp, actor="ops", new=NewOpportunity(title="T", customer="C", owner="alice"))
    await eventually(lambda: sale_client.state(opp), lambda s: s.tasks_total == 2)
    await sale_client.complete_task(opp, CompleteTask(task_id=f"{opp}:v1:contact-assess", actor="alice"))


async def test_the_metrics_endpoint_serves_the_products_counters(sale: Sale) -> None:
    port = _free_port()
    runtime = telemetry.runtime(f"127.0.0.1:{port}")
    assert runtime is not None
    target = sale.client.service_client.config.target_host
    client = await Client.connect(target, runtime=runtime, data_converter=data_converter(None))
    async with _worker_of(sale, client, "metrics") as (sale_client, opp):
        await _start_and_complete_one(sale_client, opp)
        await sale_client.change_stage(opp, ChangeStage(stage="Proposal", actor="alice"))  # cancels one
        await sale_client.add_task(opp, AddTask(title="Call the CFO", actor="alice"))
        try:
            await sale_client.change_stage(opp, ChangeStage(stage="Nowhere", actor="alice"))
        except CommandRefused:
            pass
        await sale_client.handle(opp).signal("update_opportunity", {"budget": -1})  # refused
        await eventually(lambda: sale_client.state(opp), lambda s: len(s.rejected) == 1)
        values = await eventually(
            lambda: asyncio.to_thread(_scrape, port),
            lambda v: v.get("corpsale_commands_rejected[update_opportunity/signal]") == 1,
        )
    assert {k: v for k, v in values.items() if k.startswith("corpsale_")} == {
        "corpsale_stage_transitions": 2,  # Qualification, Proposal
        "corpsale_tasks_created": 2 + 3 + 1,
        "corpsale_tasks_completed": 1,
        "corpsale_tasks_canceled": 1,
        "corpsale_commands_rejected[change_stage/update]": 1,
        "corpsale_commands_rejected[update_opportunity/signal]": 1,
    }
    assert values["temporal series"] > 10  # the SDK's own metrics on the same endpoint


async def test_with_a_key_the_history_holds_no_customer_data_and_the_process_runs(sale: Sale) -> None:
    key = new_key()
    target = sale.client.service_client.config.target_host
    client = await Client.connect(target, data_converter=data_converter(key))
    raw = await Client.connect(target)  # what Temporal holds, as anyone with access reads it
    queue = f"corpsale-encrypted-{uuid.uuid4()}"
    opp = f"opp-{uuid.uuid4().hex[:8]}"
    customer, need = f"Initech {uuid.uuid4().hex[:6]}", f"secret need {uuid.uuid4().hex[:6]}"
    async with serving(client, sale.pool, task_queue=queue):
        sale_client = SaleClient(client, queue)
        new = NewOpportunity(title="Fleet renewal", customer=customer, owner="alice", budget=125000)
        await sale_client.start(opp, actor="ops", new=new)
        await eventually(lambda: sale_client.state(opp), lambda s: s.tasks_total == 2)
        state = await sale_client.update_opportunity(opp, UpdateOpportunity(need=need, actor="alice"))
        assert (state.data["customer"], state.data["need"]) == (customer, need)
        state = await sale_client.change_stage(opp, ChangeStage(stage="Proposal", actor="alice"))
        assert state.stage == "Proposal" and len(state.open_tasks) == 3
        # The CLI reads it with the key, and says what is wrong without it or with another.
        env = {"CORPSALE_TASK_QUEUE": queue, "CORPSALE_ENCRYPTION_KEY": key}
        shown = await sale.cli("state", opp, "--json", env=env)
        assert shown.code == 0 and json.loads(shown.stdout)["data"]["customer"] == customer, shown.stderr
        no_key = await sale.cli("state", opp, env={**env, "CORPSALE_ENCRYPTION_KEY": ""})
        assert (
            no_key.code == 1
            and "the process's data is encrypted: set CORPSALE_ENCRYPTION_KEY" in no_key.stderr
        )
        other = await sale.cli("state", opp, env={**env, "CORPSALE_ENCRYPTION_KEY": new_key()})
        assert (
            other.code == 1 and "was encrypted with key" in other.stderr and "Traceback" not in other.stderr
        )
    assert (await sale.opportunity(opp))["need"] == need  # the business data is stored as ever

    history = await raw.get_workflow_handle(f"opportunity-{opp}").fetch_history()
    dumped = history.to_json()
    for secret in (customer, need, "125000", base64.b64encode(customer.encode()).decode()):
        assert secret not in dumped
    assert "binary/encrypted" in base64.b64decode(_first_payload(history)["metadata"]["encoding"]).decode()

    # The codec endpoint decodes it for the Web UI, for the UI's origin only.
    port = _free_port()
    runner = await codec_server.serve(
        EncryptionCodec(parse_key(key)), host="127.0.0.1", port=port, ui_origins=["http://localhost:8233"]
    )
    try:
        async with aiohttp.ClientSession() as http:
            body = json.dumps({"payloads": [_first_payload(history)]})
            headers = {"Origin": "http://localhost:8233", "Content-Type": "application/json"}
            async with http.post(f"http://127.0.0.1:{port}/decode", data=body, headers=headers) as response:
                assert response.status == 200
                assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:8233"
                decoded = (await response.json())["payloads"][0]
            assert customer in base64.b64decode(decoded["data"]).decode()
            async with http.post(f"http://127.0.0.1:{port}/decode", data="{oops") as response:
                assert response.status == 400
    finally:
        await runner.cleanup()


def _first_payload(history: object) -> dict[str, Any]:
    """The start input's payload, as the codec protocol's JSON carries it."""
    events = json.loads(history.to_json())["events"]  # type: ignore[attr-defined]
    started = events[0]["workflowExecutionStartedEventAttributes"]
    payload: dict[str, Any] = started["input"]["payloads"][0]
    return payload


def test_a_wrong_key_is_refused_with_what_to_do() -> None:
    for text, why in [
        ("not base64!", "not base64"),
        (base64.b64encode(b"short").decode(), "must be 32 bytes"),
    ]:
        try:
            parse_key(text)
        except ValueError as err:
            assert why in str(err)
        else:
            raise AssertionError(f"{text!r} was taken as a key")


async def test_a_payload_written_with_another_key_is_named_as_such() -> None:
    mine, theirs = EncryptionCodec(parse_key(new_key())), EncryptionCodec(parse_key(new_key()))
    [payload] = await theirs.encode([data_converter(None).payload_converter.to_payloads(["x"])[0]])
    try:
        await mine.decode([payload])
    except ValueError as err:
        assert f"encrypted with key {theirs.key_id!r}" in str(err)
    else:
        raise AssertionError("decoded with the wrong key")


def _log_three(log_format: str) -> list[str]:
    """Three lines as the worker writes them: from a task child, from an activity, from neither."""
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    telemetry.configure_logging(log_format)
    capture = Capture()
    capture.addFilter(telemetry.OpportunityFilter())
    capture.setFormatter(logging.getLogger().handlers[0].formatter)
    log = logging.getLogger("corpsale.test")
    log.addHandler(capture)
    try:
        child = {"workflow_id": "task-opp-9:v2:present-proposal"}
        log.warning("child", extra={"temporal_workflow": child})
        log.warning("activity", extra={"temporal_activity": {"workflow_id": "opportunity-opp-9"}})
        log.warning("no process")
    finally:
        log.removeHandler(capture)
        root.handlers[:] = handlers  # pytest's own, not one on a stream it closes later
        root.setLevel(level)
    return lines


def test_log_lines_name_their_opportunity() -> None:
    lines = [json.loads(line) for line in _log_three("json")]
    assert [line["opportunity"] for line in lines] == ["opp-9", "opp-9", "-"]
    assert lines[0]["workflow"] == {"workflow_id": "task-opp-9:v2:present-proposal"}
    text = _log_three("text")
    assert [line.split("opportunity=")[1].split()[0] for line in text] == ["opp-9", "opp-9", "-"]


async def test_tracing_spans_follow_a_command_from_the_client_into_the_process(sale: Sale) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    target = sale.client.service_client.config.target_host
    interceptors = telemetry.tracing_interceptors(provider)
    client = await Client.connect(target, data_converter=data_converter(None), interceptors=interceptors)
    async with _worker_of(sale, client, "traced") as (traced, opp):
        await _start_and_complete_one(traced, opp)
        await journal_settled(sale, opp)  # the task workflows are started once their stage entry is confirmed
    finished = spans.get_finished_spans()
    names = {span.name for span in finished}
    assert {"StartWorkflow:CorporateSale", "RunWorkflow:CorporateSale", "RunWorkflow:SaleTask"} <= names, (
        names
    )
    # The process is one trace from its start: its run, activities, the start of its task
    # workflows (by the journal relay, in the trace of the step that asked for them) and the
    # update it handled. The client's own update and query calls are traces of their own; a task
    # workflow's later work may end after the worker stops.
    [start] = [span for span in finished if span.name == "StartWorkflow:CorporateSale"]
    process = {span.name for span in finished if span.context.trace_id == start.context.trace_id}
    assert {
        "RunActivity:enter_stage",
        "StartWorkflow:SaleTask",
        "HandleUpdate:complete_task_update",
        "RunActivity:complete_task",
    } <= process, process
    assert "StartWorkflowUpdate:complete_task_update" in names
