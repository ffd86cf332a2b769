"""The one error the product's own rules raise from the data side: an edit or a request they
refuse, with a text that says why and what to do instead. The CLI prints it as one line."""

from __future__ import annotations


class Refused(Exception):
    """Refused by a rule; the message is for the person who asked."""
