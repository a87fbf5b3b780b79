"""``actr completion``: the scripts are run by the real shells, with the words set as a shell sets them
when TAB is pressed (bash: COMP_WORDS and COMP_CWORD; zsh: words and CURRENT)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ctl.completion import walk
from ctl.main import build_parser, main

#: Reads the words from $1 (a trailing space means a new, empty word), then calls _actr.
BASH_DRIVER = """
source "$SCRIPT"
read -ra COMP_WORDS <<< "$1"
[[ $1 == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
_actr
printf '%s\\n' "${COMPREPLY[@]}"
"""

#: compadd and _files only exist inside zsh's completion system; stand-ins print what was offered.
ZSH_DRIVER = """
autoload -Uz compinit && compinit -u -d "$DUMP"
source "$SCRIPT"
compadd() { shift; print -rl -- "$@" }
_files() { print -r -- "<files>" }
words=(${(z)1})
[[ $1 == *" " ]] && words+=("")
CURRENT=${#words}
_actr
"""


@pytest.fixture
def script_of(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    def write(shell: str) -> Path:
        assert main(["completion", shell]) == 0
        path = tmp_path / f"actr.{shell}"
        path.write_text(capsys.readouterr().out)
        return path

    return write


def complete_bash(script: Path, line: str) -> list[str]:
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", BASH_DRIVER, "bash", line],
        env={"SCRIPT": str(script), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stderr == ""
    return result.stdout.split()


def test_bash_completes_containers_k_to_kill(script_of) -> None:
    assert complete_bash(script_of("bash"), "actr containers k") == ["kill"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("actr c", ["containers", "checkpoints", "completion"]),
        ("actr --address ipc:///x.sock containers st", ["start", "state", "stats"]),
        ("actr containers start -", ["-h", "--help", "--json", "-c", "--checkpoint", "-a", "--attach",
                                     "-t", "--tty", "-T", "--no-tty"]),
        ("actr checkpoints list --b", ["--bundle"]),
        ("actr completion ", ["bash", "zsh"]),
        # A value (a signal, a path) and a positional (ID, BUNDLE) are left to the shell's file completion.
        ("actr containers kill -s ", []),
        ("actr containers kill -s KILL ", []),
    ],
)  # fmt: skip
def test_bash_follows_the_command_tree(script_of, line: str, expected: list[str]) -> None:
    assert complete_bash(script_of("bash"), line) == expected


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_offers_the_same_words(script_of, tmp_path: Path) -> None:
    script = script_of("zsh")

    def offered(line: str) -> list[str]:
        result = subprocess.run(
            ["zsh", "-f", "-c", ZSH_DRIVER, "zsh", line],
            env={"SCRIPT": str(script), "DUMP": str(tmp_path / "zcompdump"), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout.split()

    # zsh's compadd filters by the typed prefix itself, so the whole column is offered.
    assert "kill" in offered("actr containers k")
    assert offered("actr completion ") == ["bash", "zsh"]
    assert offered("actr checkpoints list --bundle ") == ["<files>"]


def test_every_command_of_the_parser_is_in_the_tree() -> None:
    nodes = {node.path: node for node in walk(build_parser())}
    assert {"containers start", "containers exec", "checkpoints list", "completion"} <= set(nodes)
    assert "--bundle" in nodes["checkpoints list"].value_options
    assert "--tty" in nodes["containers start"].options
    assert "--tty" not in nodes["containers start"].value_options
