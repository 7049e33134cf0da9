"""Write ``insurance/openapi.json``: the insurance platform contract, from the sandbox server's app.

The document is what :func:`insurance.server.create_app` publishes at ``/openapi.json`` (admin routes
left out), with sorted keys so a change to the contract shows as a small diff. No network.

Usage::

    python tools/make_openapi.py            # (re)write the shipped file
    python tools/make_openapi.py --check    # exit 1 if the shipped file differs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from insurance.server import openapi_document

OUTPUT = Path(__file__).resolve().parent.parent / "insurance" / "openapi.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if --output differs from what we'd write"
    )
    args = parser.parse_args(argv)
    text = openapi_document()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date: run tools/make_openapi.py", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
