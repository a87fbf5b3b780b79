"""The README's ```console blocks as data, and a tolerant matcher for their output.

The README's examples are tested (tests/e2e/test_readme_examples.py) so that they cannot drift from the
product again. This module knows the README's conventions and nothing about daemons:

- a line starting with ``$ `` is a command; a trailing ``  # ...`` on it is a comment for the reader;
- the lines after a command, up to the next ``$ ``, are what it prints;
- an HTML comment on the line before a block, ``<!-- readme-test: skip: REASON -->``, says the block
  cannot run in a test (a terminal, another host); ``<!-- readme-test: requires: criu -->`` says it
  needs a working CRIU.

Output is compared the way a reader compares it: runs of whitespace are one space (column widths
follow the data), a number in the README stands for any number with the same unit and a size for any
size (pids, times and sizes vary from run to run), and ``...`` stands for anything (as a whole line: any
number of lines). Everything else, headers, ids, statuses and words, must be there as written; an
``echo $?`` status is compared exactly.
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs

MARKER = re.compile(r"^<!--\s*readme-test:\s*(?P<kind>skip|requires):\s*(?P<value>.*?)\s*-->\s*$")
FENCE_OPEN = "```console"
FENCE_CLOSE = "```"
PROMPT = "$ "
COMMENT = re.compile(r"\s+#\s.*$")
ELLIPSIS = "..."
# A number, maybe a time or a date, with a unit and brackets around it: `30837`, `(0.72`, `37.8MiB`,
# `2026-12-05T08:45:52`. The brackets and the unit must match; the digits may differ.
NUMBER = re.compile(
    r"^(?P<before>[(\[]?)(?P<digits>\d[\d.,:T-]*)(?P<unit>[A-Za-z%]{0,3}(?:/s)?)(?P<after>[)\],]?)$"
)


@attrs.frozen
class Step:
    """One command and what the README says it prints."""

    line: int
    command: str
    expected: tuple[str, ...]

    @property
    def asks_status(self) -> bool:
        """``echo $?`` shows the previous command's exit status, so it is not run but compared."""
        return self.command == "echo $?"


@attrs.frozen
class Block:
    """A ```console block; ``line`` is its opening fence's line (the id a test reports it by)."""

    line: int
    steps: tuple[Step, ...]
    skip: str | None = None
    requires: tuple[str, ...] = ()


def parse(path: Path) -> list[Block]:
    """Every ```console block of a markdown file, in order, with its markers."""
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        if lines[index].strip() != FENCE_OPEN:
            index += 1
            continue
        skip, requires = markers(lines, index)
        start = index + 1
        end = start
        while end < len(lines) and lines[end].strip() != FENCE_CLOSE:
            end += 1
        blocks.append(Block(start, tuple(steps(lines[start:end], start + 1)), skip, requires))
        index = end + 1
    return blocks


def markers(lines: list[str], fence: int) -> tuple[str | None, tuple[str, ...]]:
    """The ``readme-test`` comments directly above the fence at ``fence`` (0-based)."""
    skip: str | None = None
    requires: list[str] = []
    index = fence - 1
    while index >= 0 and (found := MARKER.match(lines[index].strip())):
        if found["kind"] == "skip":
            skip = found["value"]
        else:
            requires.extend(part.strip() for part in found["value"].split(","))
        index -= 1
    return skip, tuple(requires)


def steps(body: list[str], first_line: int) -> list[Step]:
    """The commands of a block's body (its lines numbered from ``first_line``) with their output."""
    found: list[Step] = []
    command: str | None = None
    command_line = 0
    expected: list[str] = []
    for number, text in enumerate(body, first_line):
        if text.startswith(PROMPT):
            if command is not None:
                found.append(Step(command_line, command, tuple(expected)))
            command, command_line, expected = COMMENT.sub("", text[len(PROMPT) :]).strip(), number, []
        elif command is not None:
            expected.append(text)
        elif text.strip():
            raise ValueError(f"README line {number}: output before any command: {text!r}")
    if command is not None:
        found.append(Step(command_line, command, tuple(expected)))
    return found


def tokens(line: str) -> list[str]:
    return line.split()


# A size is printed in whichever unit suits it (`404.0KiB`, then `1.2MiB`): any of these matches any other.
BYTE_UNITS = frozenset({"B", "KiB", "MiB", "GiB", "TiB", "kB", "KB", "MB", "GB", "TB"})


def unit_kind(unit: str) -> str:
    return "bytes" if unit in BYTE_UNITS else unit


def token_matches(expected: str, actual: str) -> bool:
    if expected == actual:
        return True
    want, got = NUMBER.match(expected), NUMBER.match(actual)
    return (
        want is not None
        and got is not None
        and (want["before"], unit_kind(want["unit"]), want["after"])
        == (got["before"], unit_kind(got["unit"]), got["after"])
    )


def line_matches(expected: list[str], actual: list[str]) -> bool:
    """Token by token; an ``...`` token takes any run of tokens, none included."""
    if not expected:
        return not actual
    head, rest = expected[0], expected[1:]
    if head == ELLIPSIS:
        return any(line_matches(rest, actual[skip:]) for skip in range(len(actual) + 1))
    return bool(actual) and token_matches(head, actual[0]) and line_matches(rest, actual[1:])


def output_matches(expected: list[str], actual: list[str]) -> bool:
    """Line by line, blank lines ignored; an ``...`` line takes any run of lines, none included."""
    want = [tokens(line) for line in expected if line.strip()]
    got = [tokens(line) for line in actual if line.strip()]
    return _lines_match(want, got)


def _lines_match(want: list[list[str]], got: list[list[str]]) -> bool:
    if not want:
        return not got
    head, rest = want[0], want[1:]
    if head == [ELLIPSIS]:
        return any(_lines_match(rest, got[skip:]) for skip in range(len(got) + 1))
    return bool(got) and line_matches(head, got[0]) and _lines_match(rest, got[1:])
