"""``python -m benchmarks run [--quick] [--pin] [--only ...] [--out DIR] [--profile]``; see benchmarks/README.md.

Also ``python -m benchmarks report [DIR]``: render ``DIR/results.json`` into ``DIR.md`` again.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args.pop(0) if args else "help"
    if command == "run":
        from benchmarks.harness import main as run

        return run(args)
    if command == "report":
        from benchmarks.harness import DEFAULT_OUT
        from benchmarks.report import render

        out = Path(args[0]) if args else DEFAULT_OUT
        print(f"wrote {render(json.loads((out / 'results.json').read_text()), out)}")
        return 0
    if command == "_memory":  # a fresh interpreter for one memory measurement (internal)
        from benchmarks._memory import measure

        print(json.dumps(measure(int(args[0]), "--traced" in args)))
        return 0
    print(__doc__, file=sys.stderr)
    return 0 if command in ("help", "-h", "--help") else 2


if __name__ == "__main__":
    sys.exit(main())
