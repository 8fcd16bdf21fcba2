"""The one exception the data layer raises for bad or unsupported input."""
from __future__ import annotations

from m2hmx import M2HMXError


class DatasetError(M2HMXError):
    """A dataset file or folder is missing, malformed or unsupported; the message is one line naming it."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
