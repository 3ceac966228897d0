"""Run every benchmark in sequence with its default sizes: `python -m bench [--json] [--only NAME]`.

Each benchmark prints its table as it finishes (not with --json); the last line on stdout is one
JSON object with every benchmark's figures, keyed by name.
"""

from __future__ import annotations

import argparse
import json

from bench import catchup, ingest
from bench.common import console, install_sigterm, print_table

BENCHMARKS = {"ingest": ingest, "catchup": catchup}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print only one JSON object on stdout")
    parser.add_argument("--only", choices=list(BENCHMARKS), action="append",
                        help="run only this benchmark (repeatable)")
    args = parser.parse_args(argv)
    install_sigterm()
    results: dict[str, dict] = {}
    failed = False
    for name, module in BENCHMARKS.items():
        if args.only and name not in args.only:
            continue
        console.rule(f"benchmark: {name}")
        options = module.parser().parse_args([])
        try:
            figures = module.run(options)
        except KeyboardInterrupt:
            console.print("[red]interrupted[/red]: the stack was taken down")
            return 130
        except Exception as error:  # noqa: BLE001 - report it and go on with the next benchmark
            console.print_exception()
            results[name] = {"error": repr(error)}
            failed = True
            continue
        results[name] = figures
        if not args.json:
            print_table(name, module.rows(figures))
    print(json.dumps(results, default=str), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
