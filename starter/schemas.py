"""JSON Schemas of the public contract, exported from the pydantic models."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from workflows import contract as c
from workflows import event_data, operations

CONTRACT: dict[str, type[BaseModel]] = {
    "start": c.StartProcess,
    **{spec.name: spec.model for spec in c.COMMANDS},
    **c.UPDATE_ONLY,
    c.QUERY_STATE: c.StateView,
    c.QUERY_MIGRATION_PLAN: operations.MigrationPlan,
}


def schemas() -> dict[str, str]:
    """File name → schema text, for every payload of the contract."""
    out = {}
    events = {f"event.{kind}": model for kind, model in event_data.EVENTS.items()}
    for name, model in {**CONTRACT, **events}.items():
        mode: Literal["validation", "serialization"] = (
            "serialization" if model in (c.StateView, operations.MigrationPlan) else "validation"
        )
        schema = model.model_json_schema(mode=mode)
        out[f"{name}.schema.json"] = json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
    return out


def write(directory: str | Path) -> list[Path]:
    """Write every schema into `directory` (made if missing); OSError names the path it could not
    write, NotADirectoryError when `directory` is a file."""
    target = Path(directory)
    if target.exists() and not target.is_dir():  # mkdir would only say "File exists"
        raise NotADirectoryError(errno.ENOTDIR, "it is a file, not a folder", str(target))
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in schemas().items():
        path = target / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
