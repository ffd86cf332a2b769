"""The process definition (which tasks each stage opens, what their outcomes do) and the
Opportunity stages lookup. Both are data; the workflow only interprets them.
"""

from __future__ import annotations

import difflib
import json
from datetime import datetime, timedelta
from enum import StrEnum
from importlib import resources
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from workflows.contract import OpportunityFields
from workflows.fields import DEFAULT_PROCESS, TEAM_PREFIX, ProcessName, TeamRef

StageName = Annotated[str, StringConstraints(min_length=1, max_length=100)]
GuideText = Annotated[str, StringConstraints(min_length=1, max_length=1000)]
# Durations and delays: positive, and at most ten years (a date beyond that overflows).
Delay = Annotated[timedelta, Field(gt=timedelta(0), le=timedelta(days=3650))]


class Effect(StrEnum):
    CONTINUE = "continue"
    MOVE = "move"


class Outcome(BaseModel):
    """An outcome of a task and what it does to the flow."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    effect: Effect = Effect.CONTINUE
    stage: StageName | None = None
    close_reason: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        default=None,
        description="The close reason recorded when this outcome closes the opportunity as lost.",
    )

    @model_validator(mode="after")
    def _stage_only_for_move(self) -> Self:
        if (self.effect is Effect.MOVE) != (self.stage is not None):
            raise ValueError(f"outcome {self.name!r}: 'stage' is required for 'move' and only there")
        return self


DEFAULT_OUTCOMES = (Outcome(name="done"),)
# A definition's size as JSON: a process carries it from run to run (workflows/state.py).
DEFINITION_BYTES = 48 * 1024


class TaskTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9\-]{0,40}$")]
    title: Annotated[str, StringConstraints(min_length=1, max_length=300)]
    duration: Delay
    outcomes: tuple[Outcome, ...] = Field(default=DEFAULT_OUTCOMES, max_length=10)
    approver: Literal["manager"] | TeamRef | None = Field(
        default=None,
        description="Whose task it is instead of the deal owner's: 'manager', the owner's manager in"
        " the people directory (the owner's own task when they have none), or a team ('team:legal':"
        " its members see it, one claims it). Only they may complete it.",
    )
    assignee: TeamRef | None = Field(
        default=None,
        description="A team whose queue the task goes to instead of the owner ('team:finance'): its"
        " members see it, one claims it and completes it.",
    )

    @model_validator(mode="after")
    def _distinct_outcomes(self) -> Self:
        names = [o.name for o in self.outcomes]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"task {self.key!r}: outcomes must be non-empty and distinct")
        return self

    @property
    def default_outcome(self) -> Outcome:
        return self.outcomes[0]

    def outcome(self, name: str | None) -> Outcome | None:
        if name is None:
            return self.default_outcome
        return next((o for o in self.outcomes if o.name == name), None)


def _opportunity_fields(names: tuple[str, ...], where: str) -> None:
    unknown = [f for f in names if f not in OpportunityFields.model_fields]
    if unknown:
        raise ValueError(
            f"{where}: {', '.join(map(repr, unknown))} are not opportunity fields; those are:"
            f" {', '.join(OpportunityFields.model_fields)}"
        )


class Requirements(BaseModel):
    """What an opportunity must have to enter a stage (a gate): fields filled in and stages it
    has been in. A move that lacks them is refused with the list; the move to the next stage
    once every task is done waits for them; the owner's manager may override."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fields: tuple[str, ...] = Field(default=(), description="Opportunity fields that must be filled in.")
    visited: tuple[StageName, ...] = Field(
        default=(), description="Stages the opportunity must have been in."
    )


class StageTasks(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: StageName
    tasks: tuple[TaskTemplate, ...] = Field(max_length=20)
    stale_after: Delay | None = Field(
        default=None,
        description="A stale-deal notice to the owner when a visit of this stage has gone this"
        " long without a completed task (R20); none if unset.",
    )
    goal: GuideText | None = Field(default=None, description="What the stage is for, in a sentence.")
    guidance: tuple[GuideText, ...] = Field(
        default=(), max_length=20, description="What is recommended at this stage, in order."
    )
    key_fields: tuple[str, ...] = Field(
        default=(),
        description="The opportunity's fields this stage asks to have filled in (shown as still to"
        " fill while they are empty).",
    )

    requires: Requirements | None = Field(
        default=None, description="What the opportunity must have to enter this stage (a gate)."
    )

    @model_validator(mode="after")
    def _known_fields(self) -> Self:
        _opportunity_fields(self.key_fields, f"stage {self.stage!r}: key_fields")
        if self.requires is not None:
            _opportunity_fields(self.requires.fields, f"stage {self.stage!r}: requires.fields")
        return self


class Reminders(BaseModel):
    """The timers of every open task (R20): a reminder before it is due, an overdue notice when it
    is due, and an escalation to the owner's manager while it stays overdue."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    before_due: Delay | None = Field(default=None, description="Remind this long before due.")
    overdue: bool = Field(default=True, description="Notify the owner when the task falls due.")
    escalate_after: Delay | None = Field(
        default=None, description="Escalate to the manager this long after due."
    )


class ProcessDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    process: ProcessName = Field(
        default=DEFAULT_PROCESS,
        description="Which sales process of the library this is a version of (`corpsale processes`).",
    )
    name: str
    version: int = Field(ge=1)
    stages: tuple[StageTasks, ...] = Field(max_length=20)
    follow_up: tuple[TaskTemplate, ...] = Field(
        default=(), max_length=20, description="Tasks for the owner once the opportunity is won (R13)."
    )
    reminders: Reminders | None = Field(default=None, description="Task timers (R20); none if unset.")
    calendar: Literal["days", "working-days"] = Field(
        default="days",
        description="How task durations count days: every day, or Monday to Friday only (UTC).",
    )
    listed_stages_only: bool = Field(
        default=False,
        description="true: the process has only the stages listed here and the lookup's final ones; a"
        " move to another stage is refused, and a stage whose tasks are done goes on to the next one"
        " listed. false: every stage of the lookup (the corporate sale's way).",
    )

    def due(self, start: datetime, duration: timedelta) -> datetime:
        """When a task that starts at `start` and takes `duration` is due. With working days,
        each whole day of the duration is a weekday, and a due time that falls on a weekend
        moves to the Monday after, at the same time of day."""
        if self.calendar == "days":
            return start + duration
        due = start
        for _ in range(duration.days):
            due += timedelta(days=1)
            while due.weekday() >= 5:
                due += timedelta(days=1)
        due += duration - timedelta(days=duration.days)
        while due.weekday() >= 5:
            due += timedelta(days=1)
        return due

    @model_validator(mode="after")
    def _unique(self) -> Self:
        held = len(self.model_dump_json().encode())
        if held > DEFINITION_BYTES:
            raise ValueError(
                f"the definition takes {held // 1024} KiB; at most {DEFINITION_BYTES // 1024} KiB (each"
                " process carries it from run to run): shorten its texts"
            )
        names = [s.stage for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError("a stage is listed twice in the definition")
        for s in self.stages:
            keys = [t.key for t in s.tasks]
            if len(set(keys)) != len(keys):
                raise ValueError(f"stage {s.stage!r}: task keys must be distinct")
        keys = [t.key for t in self.follow_up]
        if len(set(keys)) != len(keys):
            raise ValueError("follow_up: task keys must be distinct")
        if any(t.approver or t.assignee for t in self.follow_up):
            raise ValueError("follow_up: a won deal's follow-up tasks are the owner's; they name no approver")
        for s in self.stages:
            for t in s.tasks:
                if t.approver and t.assignee:
                    raise ValueError(f"task {t.key!r}: an approver or an assignee, not both")
        return self


class Stage(BaseModel):
    """One row of the Opportunity stages lookup."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: StageName
    order: int
    final: bool
    successful: bool | None = None
    probability: int = Field(ge=0, le=100)


class Process(BaseModel):
    """A definition validated against the stages lookup it runs with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    definition: ProcessDefinition
    stages: tuple[Stage, ...] = Field(max_length=50)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        known = {s.name for s in self.stages}
        if not any(s.final for s in self.stages):
            raise ValueError("the stages lookup has no final stage")
        for st in self.definition.stages:
            if st.stage not in known:
                raise ValueError(f"definition names stage {st.stage!r}, not in the stages lookup")
            if self.stage(st.stage).final and st.tasks:
                raise ValueError(f"final stage {st.stage!r} cannot open tasks")
            for name in st.requires.visited if st.requires else ():
                if name not in known:
                    raise ValueError(
                        f"stage {st.stage!r} requires a visit to {name!r}, not in the stages lookup"
                    )
            for task in st.tasks:
                for o in task.outcomes:
                    if o.stage is not None and o.stage not in known:
                        raise ValueError(
                            f"task {task.key!r} outcome {o.name!r} moves to unknown stage {o.stage!r}"
                        )
        return self

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    def is_lost(self, name: str) -> bool:
        """A final, unsuccessful stage (Closed lost, and any like it)."""
        stage = self.stage(name)
        return stage.final and not stage.successful

    @property
    def its_stages(self) -> tuple[Stage, ...]:
        """The stages a deal of this process may be in: the lookup's, or with
        `listed_stages_only` those the definition lists and the final ones."""
        if not self.definition.listed_stages_only:
            return self.stages
        listed = {part.stage for part in self.definition.stages}
        return tuple(s for s in self.stages if s.final or s.name in listed)

    def has_stage(self, name: str) -> bool:
        return any(s.name == name for s in self.its_stages)

    def tasks_of(self, stage: str) -> tuple[TaskTemplate, ...]:
        for st in self.definition.stages:
            if st.stage == stage:
                return st.tasks
        return ()

    def stage_tasks(self, stage: str) -> StageTasks | None:
        """The definition's part for `stage` (its tasks and guidance), if it has one."""
        return next((st for st in self.definition.stages if st.stage == stage), None)

    def needs_approver(self, stage: str) -> bool:
        """Whether entering `stage` opens a task that the owner's manager approves (who that is:
        `people`)."""
        return any(t.approver == "manager" for t in self.tasks_of(stage))

    def teams(self) -> set[str]:
        """The teams its tasks go to (`team:NAME` without the prefix)."""
        refs = [t.approver or t.assignee for st in self.definition.stages for t in st.tasks]
        return {ref[len(TEAM_PREFIX) :] for ref in refs if ref and ref.startswith(TEAM_PREFIX)}

    def stale_after(self, stage: str) -> timedelta | None:
        return next((st.stale_after for st in self.definition.stages if st.stage == stage), None)

    def task(self, stage: str, key: str) -> TaskTemplate:
        for t in self.tasks_of(stage):
            if t.key == key:
                return t
        raise KeyError(f"{stage}/{key}")

    def next_stage(self, stage: str) -> Stage | None:
        """The stage after `stage` by order (after the last open stage: the first final one)."""
        current = self.stage(stage).order
        later = sorted((s for s in self.its_stages if s.order > current), key=lambda s: s.order)
        return later[0] if later else None

    def first_stage(self) -> Stage:
        return min(self.its_stages, key=lambda s: s.order)


BUNDLED = ("corporate_sale.json", "small_business_sale.json")  # the processes shipped, in this folder


def bundled_definitions() -> list[ProcessDefinition]:
    """The definitions shipped with the product, the corporate sale first."""
    folder = resources.files(__package__)
    return [
        ProcessDefinition.model_validate(json.loads(folder.joinpath(f).read_text("utf-8"))) for f in BUNDLED
    ]


def load_default_definition() -> ProcessDefinition:
    """The bundled corporate sale."""
    return bundled_definitions()[0]


def describe_duration(value: timedelta) -> str:
    days, seconds = value.days, value.seconds
    parts = [f"{days} day{'s' * (days != 1)}"] if days else []
    if seconds:
        parts.append(f"{seconds // 3600} h" if seconds % 3600 == 0 else f"{seconds // 60} min")
    return " ".join(parts) or "0 min"


def mermaid(process: Process) -> str:
    """The process as a Mermaid flowchart: stages with their tasks, and what moves between them."""

    def node(name: str) -> str:
        return "s_" + "".join(ch if ch.isalnum() else "_" for ch in name)

    lines = ["flowchart LR"]
    for stage in sorted(process.its_stages, key=lambda s: s.order):
        tasks = "".join(f"<br/>• {t.title}" for t in process.tasks_of(stage.name))
        part = process.stage_tasks(stage.name)
        goal = f"<br/><i>{part.goal}</i>" if part is not None and part.goal else ""
        label = f"{stage.name} ({stage.probability}%){goal}{tasks}".replace('"', "'")
        shape = ('(["', '"])') if stage.final else ('["', '"]')
        lines.append(f"  {node(stage.name)}{shape[0]}{label}{shape[1]}")
    for stage in sorted(process.its_stages, key=lambda s: s.order):
        if stage.final:
            continue
        following = process.next_stage(stage.name)
        if following is not None and process.tasks_of(stage.name):
            lines.append(f"  {node(stage.name)} -->|all tasks done| {node(following.name)}")
        for task in process.tasks_of(stage.name):
            for outcome in task.outcomes:
                if outcome.stage is not None:
                    lines.append(
                        f"  {node(stage.name)} -->|{task.key}: {outcome.name}| {node(outcome.stage)}"
                    )
    lines.append("  %% change_stage moves from any open stage to any stage; a final stage is never left.")
    return "\n".join(lines)


def did_you_mean(name: str, names: list[str]) -> str:
    """'Did you mean 'Proposal'? ' for a name that differs from a known one in case or a letter."""
    same = [n for n in names if n.casefold() == name.casefold()]
    close = same or difflib.get_close_matches(name, names, n=1, cutoff=0.75)
    return f"Did you mean {close[0]!r}? " if close else ""
