"""info, check and map on several images in one run: the header line before each
image's text, the JSON line of each image, and the exit status of the run.

One image prints exactly what it prints alone. Several: in text, each image's output
follows a header line `==> IMAGE <==` (a blank line before each header but the
first), as head(1) separates files; with --json, one JSON document per line (JSON
lines), in the order given: {"image": IMAGE, "status": S, "result": R}, where R is
the document the command prints for that image alone and S its exit status, or
"error": MESSAGE in place of "result" when it could not be read, both when check
failed after its report (the message is also on stderr). The run exits with the
worst status of its images.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Optional

from .records import Record

# Statuses from best to worst: clean, leaks only (check), corruptions (check), the
# image cannot be read. Any other status (interrupted, ...) ends the run at once.
_ORDER = (0, 3, 2, 1)


class Outcome(Record):
    """How one image went: its exit status and, when it failed, why."""

    status: int
    error: Optional[str] = None


def worst(statuses: Iterable[int]) -> int:
    """The worst of the images' exit statuses (0 for none)."""
    return max(statuses, key=_ORDER.index, default=0)


def header(image: str, first: bool) -> str:
    """The line before an image's text output."""
    return ("" if first else "\n") + f"==> {image} <=="


def json_line(image: str, outcome: Outcome, document: str) -> str:
    """One image's line: its document (JSON text, compacted onto the line), its error."""
    import json  # here: a single image's run needs none

    line: Dict[str, Any] = {"image": image, "status": outcome.status}
    if document:
        line["result"] = json.loads(document)
    if outcome.error is not None:
        line["error"] = outcome.error
    return json.dumps(line)
