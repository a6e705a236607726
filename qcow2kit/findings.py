"""Findings: what could not be read as it should, attached to the image it was read from.

A structure that cannot be read in full (cut short by the end of the file, most
often) does not stop a command: the rest of the image is still read and shown, the
missing part as QEMU reads it (zeros past the end of the file), and the structure,
its offset and the problem are kept as a finding.
"""
from __future__ import annotations

from .records import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional


class Finding(Record):
    """One structure that could not be read as it should."""

    structure: str
    offset: Optional[int]
    problem: str

    def __str__(self) -> str:
        where = f" at offset {self.offset:#x}" if self.offset is not None else ""
        return f"{self.structure}{where}: {self.problem}"


class Findings(list[Finding]):
    """An image's findings in the order they were made, each once."""

    def add(self, structure: str, offset: Optional[int], problem: str) -> None:
        finding = Finding(structure, offset, problem)
        if finding not in self:
            self.append(finding)

    def past_end(self, structure: str, offset: int, size: int, file_size: int) -> bool:
        """Note a structure of size bytes at offset that runs past the end of the file
        (read as zeros there); whether it does."""
        if size <= 0 or offset + size <= file_size:
            return False
        problem = ("lies past the end of the file" if offset >= file_size else
                   f"{size} bytes run past the end of the file, which ends at {file_size:#x}")
        self.add(structure, offset, f"{problem}; read as zeros, as QEMU reads it")
        return True
