"""Showing model text safely: attacker output is hostile by design.

Terminal control characters and ANSI escapes are rendered visibly (``\\x1b``) instead of being
interpreted, and text is wrapped in ``rich.text.Text`` so brackets are never read as markup.
"""

from __future__ import annotations

import re

from rich.text import Text

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def visible(text: str, limit: int | None = None, one_line: bool = False) -> str:
    """Return ``text`` with control characters shown as escapes, optionally on one line and cut to ``limit``."""
    shown = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
    if one_line:
        shown = shown.replace("\r\n", "\n").replace("\n", " ⏎ ").replace("\t", " ")
    if limit is not None and len(shown) > limit:
        shown = shown[: max(limit - 1, 0)] + "…"
    return shown


def safe_text(text: str, style: str = "", limit: int | None = None, one_line: bool = False) -> Text:
    """A rich Text of model output: no markup, no control characters."""
    return Text(visible(text, limit, one_line), style=style)
