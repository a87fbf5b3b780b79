#!/usr/bin/env python3
"""Write (or, with --check, verify) proto_schemas/*.schema.json from the wire message classes.

    python scripts/gen_schemas.py            # regenerate proto_schemas/
    python scripts/gen_schemas.py --check    # exit 1 if the committed files have drifted

The logic lives in ``containerd_actors.protocol.schema``; this is only the command line.
Files in the output directory that do not end in ``.schema.json`` (the README) are left alone;
stale ``*.schema.json`` files are removed when writing and reported as extra by --check.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # run from a checkout without installing the package

from containerd_actors.protocol.schema import SCHEMA_SUFFIX, render_schemas  # noqa: E402

DEFAULT_OUT = REPO_ROOT / "proto_schemas"


def _existing(out: Path) -> dict[str, str]:
    if not out.is_dir():
        return {}
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(out.glob("*" + SCHEMA_SUFFIX))}


def check(out: Path) -> list[str]:
    """One line per drifted, missing or extra schema file; empty when ``out`` is up to date."""
    wanted = render_schemas()
    have = _existing(out)
    problems = [f"missing: {name}" for name in sorted(wanted.keys() - have.keys())]
    problems += [f"extra:   {name}" for name in sorted(have.keys() - wanted.keys())]
    problems += [
        f"drifted: {name}" for name in sorted(wanted.keys() & have.keys()) if wanted[name] != have[name]
    ]
    return problems


def write(out: Path) -> list[str]:
    """Bring ``out`` up to date; returns what changed."""
    wanted = render_schemas()
    have = _existing(out)
    out.mkdir(parents=True, exist_ok=True)
    changes = []
    for name in sorted(have.keys() - wanted.keys()):
        (out / name).unlink()
        changes.append(f"removed: {name}")
    for name, text in wanted.items():
        if have.get(name) != text:
            with open(out / name, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)
            changes.append(f"{'updated' if name in have else 'created'}: {name}")
    return changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="verify instead of writing; exit 1 on drift")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})"
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.out)
        if problems:
            print(f"{args.out} is out of date with the message classes:", file=sys.stderr)
            for line in problems:
                print("  " + line, file=sys.stderr)
            print("run: python scripts/gen_schemas.py", file=sys.stderr)
            return 1
        print(f"{args.out}: {len(render_schemas())} schema files up to date")
        return 0
    changes = write(args.out)
    for line in changes:
        print(line)
    print(f"{args.out}: {len(render_schemas())} schema files, {len(changes)} changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
