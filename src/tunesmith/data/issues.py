"""A problem found in a user's data file, and the error that carries every one of them."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import TunesmithError
from .limits import CheckLimits


@dataclass(frozen=True)
class DataIssue:
    file: str
    line: int
    field: str
    message: str
    kind: str = ""
    """The data check's name for the problem (duplicate, pii, truncation, ...); empty from plain reads."""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"


@dataclass
class DataError(TunesmithError, ValueError):
    """Bad rows in a data file; `issues` lists every one of them."""

    label = "data error"

    issues: list[DataIssue] = field(default_factory=list)

    def __str__(self) -> str:
        shown = [str(i) for i in self.issues[:CheckLimits.max_issues_shown]]
        more = len(self.issues) - len(shown)
        if more > 0:
            shown.append(f"... and {more} more problem(s)")
        return "\n".join(shown)


