"""The README runner's parser and matcher: tolerant where output varies, strict everywhere else.

A matcher that accepted anything would make tests/e2e/test_readme_examples.py pass on a README that
lies, so the strict half is tested as carefully as the tolerant half.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support import readme

SAMPLE = """\
# Title

```sh
scripts/setup
```

<!-- readme-test: skip: needs a terminal -->
```console
$ actr containers attach web-1
/ # exit 2
```

<!-- readme-test: requires: criu -->
```console
$ scripts/make-bundle /tmp/busybox -- sleep 1000000          # a bundle
/tmp/busybox
$ actr containers start web-1 /tmp/busybox
4242
$ false
$ echo $?
1
```
"""


@pytest.fixture
def sample(tmp_path: Path) -> list[readme.Block]:
    path = tmp_path / "README.md"
    path.write_text(SAMPLE)
    return readme.parse(path)


def test_console_blocks_with_markers_and_line_numbers(sample: list[readme.Block]) -> None:
    assert [(block.line, block.skip, block.requires) for block in sample] == [
        (8, "needs a terminal", ()),
        (14, None, ("criu",)),
    ]
    steps = sample[1].steps
    assert [step.line for step in steps] == [15, 17, 19, 20]
    assert steps[0].command == "scripts/make-bundle /tmp/busybox -- sleep 1000000"
    assert steps[0].expected == ("/tmp/busybox",)
    assert steps[2].expected == ()
    assert steps[3].asks_status and not steps[2].asks_status


def test_a_comment_is_cut_only_after_whitespace() -> None:
    (step,) = readme.steps(["$ echo a#b   # why"], 1)
    assert step.command == "echo a#b"


def test_output_before_a_command_is_an_error() -> None:
    with pytest.raises(ValueError, match="line 3"):
        readme.steps(["", "stray"], 2)


@pytest.mark.parametrize(
    ("expected", "actual"),
    [
        ("web-1   running   4242", "web-1 running 31337"),
        ("before-upgrade (0.72 s)", "before-upgrade (1.5 s)"),
        ("x   2026-12-05T08:45:52", "x 2027-01-01T00:00:00"),
        ("memory-used gauge 37.7MiB", "memory-used gauge 120.0MiB"),
        ("404.0KiB / unlimited  0B / 0B", "1.2MiB / unlimited  4.0KiB / 0B"),
        ("rate 0.20/s", "rate 13.70/s"),
        ('{"pid": 4242, "processes": ...', '{"pid": 9, "processes": [{"pid": 9}]}'),
        ("a ... z", "a z"),
    ],
)
def test_tolerant_where_output_varies(expected: str, actual: str) -> None:
    assert readme.output_matches([expected], [actual])


@pytest.mark.parametrize(
    ("expected", "actual"),
    [
        ("web-1 running 4242", "web-2 running 4242"),
        ("web-1 running 4242", "web-1 stopped 4242"),
        ("web-1 running 4242", "web-1 running -"),
        ("web-1 running 4242", "web-1 running 4242 extra"),
        ("before-upgrade (0.72 s)", "before-upgrade (0.72 ms)"),
        ("memory-used 37.7MiB", "memory-used 37.7ms"),
        ("cpu 0.00%", "cpu 0.00"),
        ("uid=65534(nobody)", "uid=0(root)"),
    ],
)
def test_strict_everywhere_else(expected: str, actual: str) -> None:
    assert not readme.output_matches([expected], [actual])


def test_lines_must_all_be_there_unless_an_ellipsis_line_takes_them() -> None:
    table = ["NAME STATUS", "a running", "b running"]
    assert not readme.output_matches(["NAME STATUS", "a running"], table)
    assert not readme.output_matches(table, table[:2])
    assert readme.output_matches(["NAME STATUS", "..."], table)
    assert readme.output_matches(["NAME STATUS", "...", "b running"], table)
    assert readme.output_matches(["", *table, ""], table)
    assert not readme.output_matches([], ["unexpected output"])
