#!/usr/bin/env python3
"""Write (or, with --check, verify) containerd_actors/protocol/plain_generated.py from the wire classes.

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

from containerd_actors.protocol.plain_gen import render  # noqa: E402

TARGET = REPO_ROOT / "containerd_actors" / "protocol" / "plain_generated.py"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the file differs from what it would be"
    )
    args = parser.parse_args()
    wanted = render()
    have = TARGET.read_text(encoding="utf-8") if TARGET.exists() else None
    if args.check:
        if have != wanted:
            print(
                f"drifted: {TARGET.relative_to(REPO_ROOT)} (run scripts/gen_plain_codec.py)", file=sys.stderr
            )
            return 1
        return 0
    if have != wanted:
        with open(TARGET, "w", encoding="utf-8", newline="\n") as f:
            f.write(wanted)
        print(f"updated: {TARGET.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
