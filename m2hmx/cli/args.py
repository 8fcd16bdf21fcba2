"""Argument types shared by the command-line tools (argparse prints their message as one usage line, exit 2)."""
from __future__ import annotations

import argparse

from m2hmx import M2HMXError


def positive_int(text: str) -> int:
    """An integer >= 1 (frame counts, strides, threads)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def intrinsics(text: str) -> tuple[float, float, float, float]:
    """``fx,fy,cx,cy`` in pixels of the recorded images: four finite numbers, focal lengths > 0, principal point
    >= 0 (``--intrinsics``)."""
    import math

    parts = text.replace(" ", "").split(",")
    try:
        values = tuple(float(v) for v in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be four numbers fx,fy,cx,cy, got '{text}'") from None
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"must be four numbers fx,fy,cx,cy, got {len(values)} in '{text}'")
    if not all(math.isfinite(v) for v in values) or min(values[:2]) <= 0 or min(values[2:]) < 0:
        raise argparse.ArgumentTypeError(f"need finite fx, fy > 0 and cx, cy >= 0, got '{text}'")
    return values


# Exit codes of every m2hmx command: a command-line value wrong on its face, found before any work (a bad number, an
# unknown choice, a path that does not exist, an output that cannot be written) is a usage error; a failure met
# while working (a checkpoint that exists but does not load, a corrupt file, a full disk) is a failure.
USAGE, FAILURE, INTERRUPTED = 2, 1, 130


class UsageError(M2HMXError, ValueError):
    """A command-line value that is wrong on its face (exit 2, before any work)."""


def report(prog: str, exc: BaseException, code: int) -> int:
    """Print ``prog: error: <first line of exc>`` to stderr and return ``code``."""
    import sys

    print(f"{prog}: error: {exc}".splitlines()[0], file=sys.stderr)
    return code


def run_reported(prog: str, work, usage: tuple = (), failure: tuple = (), interrupted: str = "interrupted") -> int:
    """Run a command's ``work()`` (returns None or an exit code) and turn what it raises into one line on stderr and
    an exit code: ``UsageError`` and the ``usage`` exceptions exit 2 with their message, the ``failure`` ones 1 with
    theirs, any other exception 1 with its type name (no traceback), Ctrl+C 130 with ``prog: <interrupted>``."""
    import sys

    try:
        code = work()
    except (UsageError, *usage) as exc:
        return report(prog, exc, USAGE)
    except failure as exc:
        return report(prog, exc, FAILURE)
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return INTERRUPTED
    except Exception as exc:  # a failure during the run: one line, no traceback
        return report(prog, f"{type(exc).__name__}: {exc}", FAILURE)
    return code or 0


def check_input(spec: str | None, flag: str, file: bool = False) -> None:
    """A dataset spec or input path must exist (``synthetic[:SEED]`` and ScanNet shorthands like
    ``scannet/scene0011`` are resolved by the reader); ``file``: it must be a file."""
    import re
    from pathlib import Path

    import os

    if spec is None:
        return
    text = str(spec)
    path = Path(text).expanduser()
    if not file and not path.exists():
        if text == "synthetic" or text.startswith("synthetic:"):
            return
        if re.match(r"^(?:scannet/|scans/)?scene\d{4}(_\d{2})?$", text.strip("/")):
            if not os.environ.get("M2HMX_DATA_ROOT"):  # callers with --data-root pass None
                raise UsageError(f"{flag} {text}: a ScanNet shorthand needs a data root ($M2HMX_DATA_ROOT or "
                                 "--data-root where the command has it)")
            return
    if not path.exists():
        raise UsageError(f"{flag} {text}: no such {'file' if file else 'file or folder'}")
    if file and not path.is_file():
        raise UsageError(f"{flag} {text}: not a file")


def check_output_folder(folder, flag: str) -> None:
    """A folder that can be written: an existing one gets a probe file written and removed; a new one is not
    created yet (a bad input must leave nothing), its nearest existing parent must be a writable folder."""
    import os
    import tempfile
    from pathlib import Path

    folder = Path(folder).expanduser()
    try:
        if folder.is_dir():
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".m2hmx-probe-"):
                return
        if folder.exists():
            raise OSError(f"{folder} is not a folder")
        parent = folder.parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise OSError(f"{parent} is not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise OSError(f"cannot create folders in {parent}")
    except OSError as exc:
        raise UsageError(f"{flag} {folder} is not writable: {exc.strerror or exc}") from None


def check_output_file(path, flag: str) -> None:
    """A file that can be written: not a folder, and its folder writable (``check_output_folder``)."""
    from pathlib import Path

    if path is None:
        return
    path = Path(path).expanduser()
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder")
    check_output_folder(path.parent, flag)
