"""`corpsale definition ...`: the process library. Show a process's definition in force (as
text, JSON or a Mermaid diagram), list its versions, export one as a file, validate a changed file
and publish it as the next version of the process it names. Running processes keep the version
they started with; new ones take the latest. `corpsale processes` lists the processes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from activities.data import definitions
from starter.common import CliError, command_parser, default_actor, positive_int, with_db
from starter.output import print_json, print_table
from workflows.definition import Outcome, Process, ProcessDefinition, TaskTemplate, describe_duration, mermaid
from workflows.fields import DEFAULT_PROCESS


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CliError(f"cannot read {path}: {err}") from None


async def _load(conn: Any, version: int | None, process: str) -> Process:
    from activities.data.repository import load_stages

    definition = await (
        definitions.latest(conn, process) if version is None else definitions.version(conn, version, process)
    )
    try:
        return Process(definition=definition, stages=tuple(await load_stages(conn)))
    except ValidationError as err:
        raise CliError(
            f"version {definition.version} does not fit the stages lookup: {err.errors()[0]['msg']}"
        ) from None


def _describe_outcome(o: Outcome) -> str:
    moves = f" → {o.stage}" if o.stage else ""
    return o.name + moves + (f" ({o.close_reason})" if o.close_reason else "")


def _describe_task(t: TaskTemplate) -> str:
    outcomes = ", ".join(_describe_outcome(o) for o in t.outcomes)
    return f"{t.title} (due in {describe_duration(t.duration)}; outcomes: {outcomes})"


async def cmd_show(args: argparse.Namespace) -> None:
    """The definition (the latest version, or --version N), with the stages lookup it runs with."""
    process = await with_db(lambda conn: _load(conn, args.version, args.process))
    if args.json:
        print_json(process)
        return
    if args.mermaid:
        print(mermaid(process))
        return
    definition = process.definition
    print(f"{definition.name} ({definition.process}), version {definition.version}")
    if definition.listed_stages_only:
        print("Only the stages below: a move to another stage of the lookup is refused")
    if definition.calendar == "working-days":
        print("Durations count working days (Monday to Friday, UTC)")
    r = definition.reminders
    if r is not None:
        timers = [f"a reminder {describe_duration(r.before_due)} before due"] if r.before_due else []
        timers += ["an overdue notice when due"] if r.overdue else []
        timers += (
            [f"escalation to the manager {describe_duration(r.escalate_after)} after"]
            if r.escalate_after
            else []
        )
        print(f"Every task: {', '.join(timers) or 'no timers'}")
    for stage in sorted(process.its_stages, key=lambda s: s.order):
        kind = ("final, won" if stage.successful else "final, lost") if stage.final else "open"
        limit = process.stale_after(stage.name)
        stale = f"; stale after {describe_duration(limit)} without a completed task" if limit else ""
        print(f"{stage.order}. {stage.name} ({kind}, probability {stage.probability}%{stale})")
        part = process.stage_tasks(stage.name)
        if part is not None and part.goal:
            print(f"   goal: {part.goal}")
        for line in part.guidance if part is not None else ():
            print(f"   · {line}")
        if part is not None and part.key_fields:
            print(f"   key fields: {', '.join(part.key_fields)}")
        if part is not None and part.requires is not None:
            needs = [*part.requires.fields, *(f"a visit to {s}" for s in part.requires.visited)]
            print(f"   to enter: {', '.join(needs)}")
        for t in process.tasks_of(stage.name):
            print(f"   - {_describe_task(t)}")
        if stage.final and stage.successful:
            for t in definition.follow_up:
                print(f"   - follow-up: {t.title} (due in {describe_duration(t.duration)})")


async def cmd_versions(args: argparse.Namespace) -> None:
    rows = await with_db(lambda conn: definitions.list_versions(conn, args.process))
    if args.json:
        print_json(rows)
    else:
        print_table(
            rows, ["process", "version", "name", "published_at", "published_by", "open_opportunities"]
        )


async def cmd_export(args: argparse.Namespace) -> None:
    """The definition file of a version: edit it, then validate and publish it."""
    process = await with_db(lambda conn: _load(conn, args.version, args.process))
    print(process.definition.model_dump_json(indent=2))


def _tasks(definition: ProcessDefinition) -> dict[str, TaskTemplate]:
    tasks = {f"{s.stage}/{t.key}": t for s in definition.stages for t in s.tasks}
    tasks.update({f"follow-up/{t.key}": t for t in definition.follow_up})
    return tasks


def changes(before: ProcessDefinition, after: ProcessDefinition) -> list[str]:
    """What `after` changes against `before`, one line per task added, removed or changed."""
    old, new = _tasks(before), _tasks(after)
    lines = [f"+ {key}: {_describe_task(new[key])}" for key in new if key not in old]
    lines += [f"- {key}: {old[key].title}" for key in old if key not in new]
    lines += [f"~ {key}: {_describe_task(new[key])}" for key in new if key in old and new[key] != old[key]]
    parts = {part.stage: part for part in before.stages}
    for part in after.stages:
        was = parts.get(part.stage)
        if was is None or (was.goal, was.guidance, was.key_fields) != (
            part.goal,
            part.guidance,
            part.key_fields,
        ):
            lines.append(f"~ {part.stage}: goal, guidance and key fields")
        if (was.requires if was else None) != part.requires:
            gate = part.requires
            needs = [*gate.fields, *(f"a visit to {s}" for s in gate.visited)] if gate else []
            lines.append(f"~ {part.stage}: to enter: {', '.join(needs) or 'nothing'}")
    if before.name != after.name:
        lines.append(f"~ name: {after.name}")
    return lines


async def cmd_validate(args: argparse.Namespace) -> None:
    text = _read(args.file)

    async def work(conn: Any) -> tuple[ProcessDefinition, ProcessDefinition | None]:
        candidate = await definitions.validate(conn, text)
        if candidate.version == 1:  # a process new to the library
            return candidate, None
        return candidate, await definitions.latest(conn, candidate.process)

    candidate, current = await with_db(work)
    _same_process(args, candidate)
    if current is None:
        print(
            f"{args.file}: valid; published, it would be the first version of a new process,"
            f" {candidate.process}"
        )
        return
    if definitions.same(current, candidate):
        print(
            f"{args.file}: valid; no change against version {current.version}, in force:"
            " publishing it would do nothing"
        )
        return
    print(f"{args.file}: valid; published, it would be version {candidate.version}")
    print("\n".join(changes(current, candidate) or ["~ reminders, calendar or outcomes (see the file)"]))


def _same_process(args: argparse.Namespace, definition: ProcessDefinition) -> None:
    """With --process, the file must be a definition of that process (its `process`)."""
    if args.process is not None and definition.process != args.process:
        raise CliError(
            f"{args.file} is a definition of the {definition.process} process, not of {args.process}"
            f' (its "process" says which)'
        )


async def cmd_publish(args: argparse.Namespace) -> None:
    text = _read(args.file)
    if args.process is not None:
        try:
            _same_process(args, definitions.parse(text, 1))
        except definitions.DefinitionRefused as err:
            raise CliError(str(err)) from None
    published, new = await with_db(lambda conn: definitions.publish(conn, text, args.actor))
    if new:
        print(f"published version {published.version}: new processes follow it; running ones keep theirs")
    else:
        print(f"unchanged: version {published.version} is in force and equal to {args.file}")


def add_commands(sub: Any) -> None:
    definition = command_parser(
        sub,
        "definition",
        help="the process library: show, versions, export, validate, publish, migrate",
        description=__doc__,
    )
    commands = definition.add_subparsers(dest="definition_command", metavar="DEFINITION_COMMAND")

    def process_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--process",
            default=DEFAULT_PROCESS,
            help=f"which process (`corpsale processes`; {DEFAULT_PROCESS})",
        )

    def show_options(p: argparse.ArgumentParser) -> None:
        process_option(p)
        p.add_argument("--version", type=positive_int, help="this version (default: the latest)")
        p.add_argument("--mermaid", action="store_true", help="as a Mermaid diagram")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(run=cmd_show)

    show_options(definition)
    show_options(command_parser(commands, "show", help="print the definition with the stages lookup"))

    p = command_parser(commands, "versions", help="the published versions, newest first")
    p.add_argument("--process", help="only this process's (default: every process's)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_versions)

    p = command_parser(commands, "export", help="print a version as a definition file (JSON)")
    process_option(p)
    p.add_argument("--version", type=positive_int, help="this version (default: the latest)")
    p.set_defaults(run=cmd_export)

    p = command_parser(
        commands, "validate", help="check a definition file against the lookups; publish nothing"
    )
    p.add_argument("file", metavar="FILE", help="a JSON definition file, or - for standard input")
    p.add_argument("--process", help="check that it is a definition of this process (its file says which)")
    p.set_defaults(run=cmd_validate)

    p = command_parser(commands, "publish", help="publish a definition file as the next version")
    p.add_argument("file", metavar="FILE", help="a JSON definition file, or - for standard input")
    p.add_argument("--actor", default=default_actor(), help="who publishes (default: $CORPSALE_ACTOR or you)")
    p.add_argument("--process", help="check that it is a definition of this process (its file says which)")
    p.set_defaults(run=cmd_publish)

    from starter.bulk import add_migrate

    add_migrate(commands)
