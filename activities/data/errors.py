"""The one refusal of the product (workflows/rules.py): the data side raises it for an edit or a
request its rules refuse, with a text that says why and what to do instead. The CLI prints it as
one line; the process answers it to the sender."""

from __future__ import annotations

from workflows.refusals import Refused

__all__ = ["Refused"]
