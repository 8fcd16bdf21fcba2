"""One-line messages for the viewer's window and log: a library's error without its traceback or colour codes."""
from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;]*m|\[[0-9;]*m")  # colour codes some libraries put in their messages


def plain(text: str) -> str:
    """``text`` without terminal colour codes, on one line."""
    lines = [ln.strip() for ln in _ANSI.sub("", str(text)).splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def one_line(exc: BaseException) -> str:
    """A single clear line for the window: the project's own errors already name the file and problem; a
    library's error gets its type and its last line (no traceback)."""
    text = plain(str(exc))
    if type(exc).__module__.split(".")[0] in ("m2hmx", "mapping", "app") and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
