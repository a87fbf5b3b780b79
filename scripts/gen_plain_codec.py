#!/usr/bin/env python3
"""Write (or, with --check, verify) the plain codec's generated modules from the wire classes.

containerd_actors/protocol/plain_generated.py (replies) and plain_requests_generated.py (requests).

    python scripts/gen_plain_codec.py            # regenerate it
    python scripts/gen_plain_codec.py --check    # exit 1 if the committed file has drifted

The logic lives in ``containerd_actors.protocol.plain_gen``; this is only the command line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # run from a checkout without installing the package

from containerd_actors.protocol.plain_gen import render, render_requests  # noqa: E402

PROTOCOL = REPO_ROOT / "containerd_actors" / "protocol"
TARGETS = (
    (PROTOCOL / "plain_generated.py", render),
    (PROTOCOL / "plain_requests_generated.py", render_requests),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the file differs from what it would be"
    )
    args = parser.parse_args()
    drifted = False
    for target, rendering in TARGETS:
        wanted = rendering()
        have = target.read_text(encoding="utf-8") if target.exists() else None
        if have == wanted:
            continue
        if args.check:
            print(
                f"drifted: {target.relative_to(REPO_ROOT)} (run scripts/gen_plain_codec.py)", file=sys.stderr
            )
            drifted = True
            continue
        with open(target, "w", encoding="utf-8", newline="\n") as f:
            f.write(wanted)
        print(f"updated: {target.relative_to(REPO_ROOT)}")
    if drifted:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
