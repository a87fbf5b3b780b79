"""``actr completion bash|zsh``: shell completion generated from actr's own argparse parser.

The script is a table of the command tree (subcommands, options, which options take a value,
the choices of positional arguments) and a small function that walks the words typed so far
through it. Generating it from the parser keeps it in step with the commands without a
dependency; ``scripts/setup`` installs the bash one. Where the tree has nothing to offer (an ID,
a BUNDLE, the value of ``--bundle``) the shell's own file completion takes over.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ctl.arguments import Commands

SHELLS = ("bash", "zsh")


def add_commands(commands: Commands, json_after: argparse.ArgumentParser) -> None:
    completion = commands.add_parser(
        "completion",
        help="print a shell completion script: actr completion bash > /etc/bash_completion.d/actr",
        description="Print the completion script for SHELL. bash: save it in /etc/bash_completion.d/actr "
        "(scripts/setup does so as root) or source it from ~/.bashrc; zsh: add "
        '`eval "$(actr completion zsh)"` to ~/.zshrc, after compinit.',
    )
    completion.add_argument("shell", metavar="SHELL", choices=SHELLS, help="bash or zsh")
    completion.set_defaults(handler=print_completion)


async def print_completion(args: argparse.Namespace) -> int:
    sys.stdout.write(script(args.root_parser, args.shell))
    return 0


class Node:
    """One command of the tree: what may follow it.

    A plain class, not a dataclass or a NamedTuple: every ``actr`` imports this module to build
    its parser, and generating those classes' methods would cost it 2-8 ms.
    """

    __slots__ = ("choices", "options", "path", "subcommands", "value_options")

    def __init__(
        self,
        path: str,
        subcommands: tuple[str, ...],
        options: tuple[str, ...],
        value_options: tuple[str, ...],
        choices: tuple[str, ...],
    ) -> None:
        self.path = path
        self.subcommands = subcommands
        self.options = options
        self.value_options = value_options
        self.choices = choices


def walk(parser: argparse.ArgumentParser, path: str = "") -> Iterator[Node]:
    """Every command reachable from ``parser``, the root (path "") first."""
    subcommands: dict[str, argparse.ArgumentParser] = {}
    options: list[str] = []
    value_options: list[str] = []
    choices: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            subcommands.update(action.choices)
        elif action.option_strings:  # hidden ones too: ``--json`` after the command is valid
            options.extend(action.option_strings)
            if action.nargs != 0:
                value_options.extend(action.option_strings)
        elif action.choices:
            choices.extend(str(choice) for choice in action.choices)
    yield Node(path, tuple(subcommands), tuple(options), tuple(value_options), tuple(choices))
    for name, subparser in subcommands.items():
        yield from walk(subparser, f"{path} {name}".strip())


def _table(function: str, nodes: list[Node], words: str) -> str:
    """A shell function printing, for a command path, the words of one column of the tree."""
    lines = [f"_actr_{function}() {{", '    case "$1" in']
    for node in nodes:
        values = " ".join(getattr(node, words))
        if values:
            pattern = shlex.quote(node.path) if node.path else '""'
            lines.append(f"        {pattern}) echo {shlex.quote(values)} ;;")
    lines += ["    esac", "}"]
    return "\n".join(lines)


#: Walks the typed words (bash: COMP_WORDS[1..COMP_CWORD-1]; zsh: words[2..CURRENT-1]) to the
#: command they name, skipping options and the values of the options that take one.
_WALK = """\
_actr_command_of() {
    local cmdpath="" word skip=0 candidate
    for word in "$@"; do
        if ((skip)); then
            skip=0
            continue
        fi
        case "$word" in
            --) break ;;
            --*=*) continue ;;
            -*)
                case " $(_actr_value_options "$cmdpath") " in
                    *" $word "*) skip=1 ;;
                esac
                continue
                ;;
        esac
        candidate=${cmdpath:+$cmdpath }$word
        case " $(_actr_subcommands "$cmdpath") " in
            *" $word "*) cmdpath=$candidate ;;
        esac
    done
    printf '%s' "$cmdpath"
}"""

_BASH = """\
_actr() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=""
    ((COMP_CWORD > 1)) && prev=${COMP_WORDS[COMP_CWORD - 1]}
    local cmdpath
    cmdpath=$(_actr_command_of "${COMP_WORDS[@]:1:COMP_CWORD-1}")
    COMPREPLY=()
    if [[ $prev == -* && $prev != *=* ]]; then
        case " $(_actr_value_options "$cmdpath") " in
            *" $prev "*) return 0 ;;  # a value: the shell's file completion (complete -o default)
        esac
    fi
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$(_actr_options "$cmdpath")" -- "$cur"))
    else
        COMPREPLY=($(compgen -W "$(_actr_subcommands "$cmdpath") $(_actr_choices "$cmdpath")" -- "$cur"))
    fi
}
complete -o default -F _actr actr
"""

_ZSH = """\
_actr() {
    local cur=${words[CURRENT]} prev=${words[CURRENT-1]}
    local cmdpath
    cmdpath=$(_actr_command_of "${(@)words[2,CURRENT-1]}")
    if [[ CURRENT -gt 2 && $prev == -* && $prev != *=* ]]; then
        case " $(_actr_value_options "$cmdpath") " in
            *" $prev "*) _files; return ;;
        esac
    fi
    local -a offered
    if [[ $cur == -* ]]; then
        offered=(${=$(_actr_options "$cmdpath")})
    else
        offered=(${=$(_actr_subcommands "$cmdpath")} ${=$(_actr_choices "$cmdpath")})
    fi
    if (( ${#offered} )); then
        compadd -- $offered
    else
        _files
    fi
}
(( $+functions[compdef] )) || { autoload -Uz compinit && compinit }
compdef _actr actr
"""


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for ``shell`` ("bash" or "zsh")."""
    nodes = list(walk(parser))
    parts = [
        f"# {shell} completion for actr, generated by `actr completion {shell}` from actr's parser.",
        _table("subcommands", nodes, "subcommands"),
        _table("options", nodes, "options"),
        _table("value_options", nodes, "value_options"),
        _table("choices", nodes, "choices"),
        _WALK,
        _BASH if shell == "bash" else _ZSH,
    ]
    return "\n".join(parts)
