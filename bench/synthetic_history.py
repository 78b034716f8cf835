"""The synthetic power-user history's statistics (``streamrec_eval/synthetic.py``).

    python bench/synthetic_history.py [--seed 7] [--out bench/results]

Prints them as JSON and, with ``--out``, writes ``synthetic_history.json`` there.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamrec_eval.synthetic import generate  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", type=Path, default=None, help="write synthetic_history.json here")
    args = p.parse_args(argv)
    stats = generate(args.seed).stats()
    print(json.dumps(stats, indent=1))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "synthetic_history.json").write_text(json.dumps(stats, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
