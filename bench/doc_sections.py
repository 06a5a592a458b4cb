"""Named sections of a Markdown results file, so that several bench scripts (or one script's
parts, run at different times) each rewrite their own section and keep the others.

A section is the text between `<!-- begin NAME -->` and `<!-- end NAME -->`; a new one goes
after the existing ones, in the order written.
"""

from __future__ import annotations

import pathlib
import re

RESULTS_TITLE = "Results on the embedded default"


def _markers(name: str) -> tuple[str, str, re.Pattern]:
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    return begin, end, re.compile(re.escape(begin) + "\n?(.*?)" + re.escape(end), re.S)


def read_section(path: str | pathlib.Path, name: str) -> list[str]:
    """The lines of section `name` of the file at `path` ([] if the file or section is absent)."""
    path = pathlib.Path(path)
    found = _markers(name)[2].search(path.read_text()) if path.exists() else None
    return found.group(1).splitlines() if found else []


def write_section(path: str | pathlib.Path, name: str, lines: list[str],
                  title: str | None = None) -> None:
    """Replaces section `name` of the file at `path` with `lines` (appends it if absent; creates
    the file, headed by `title`, if missing)."""
    path = pathlib.Path(path)
    begin, end, pattern = _markers(name)
    block = "\n".join([begin, *lines, end])
    text = path.read_text() if path.exists() else (f"# {title}\n" if title else "")
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip("\n") + "\n")
