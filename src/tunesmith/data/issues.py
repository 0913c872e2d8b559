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
    row: int = 0
    """CSV only: the data row, counted as a spreadsheet user counts records under the header (the
    header excluded, blank rows included); 0 elsewhere. Shown when a quoted cell spanning lines
    makes it differ from the file line."""

    def __str__(self) -> str:
        # line 0 means the file as a whole, not a line of it
        where = f"{self.file}:{self.line}" if self.line else self.file
        if self.row and self.row + 1 != self.line:
            where += f" (row {self.row})"
        return f"{where}: {self.field}: {self.message}"


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


