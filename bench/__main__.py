"""Run every benchmark in sequence with its default sizes: `python -m bench [--json] [--only NAME]`.

ingest, catchup and stack run in this process; import, archive, rebuild, train, stores, match, site,
metrics, startup (bench.*_bench) and fuzz (bench.fuzz, which needs the test extra) run as child processes with
--json. Each prints its figures as it finishes (not with --json); the last line on stdout is one JSON
object with every benchmark's figures, keyed by name. Each benchmark starts and stops its own local
stack (match, site and metrics need none: they serve a synthetic SQLite store without a broker).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys

from bench import catchup, ingest, stack_bench
from bench.common import PROJECT_ROOT, console, install_sigterm, print_table, save, uninterrupted

IN_PROCESS = {"ingest": ingest, "catchup": catchup, "stack": stack_bench}
CHILD = {"import": "bench.import_bench", "archive": "bench.archive_bench", "rebuild": "bench.rebuild_bench",
         "train": "bench.train_bench", "stores": "bench.store_bench", "match": "bench.match_bench",
         "site": "bench.site_bench", "metrics": "bench.metrics_bench", "startup": "bench.startup_bench", "fuzz": "bench.fuzz"}


def run_child(module: str) -> dict:
    """A benchmark with its own CLI: run it with --json, progress on our stderr, figures from its last line."""
    process = subprocess.Popen([sys.executable, "-m", module, "--json"], stdout=subprocess.PIPE, text=True,
                               cwd=PROJECT_ROOT)
    try:
        out, _ = process.communicate()
    except BaseException:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # KeyboardInterrupt: its `finally` takes its stack down
        with uninterrupted():
            process.wait()
        raise
    if process.returncode != 0:
        raise RuntimeError(f"{module} exited with {process.returncode}")
    lines = [line for line in out.splitlines() if line.strip()]
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    names = [*IN_PROCESS, *CHILD]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print only one JSON object on stdout")
    parser.add_argument("--only", choices=names, action="append", help="run only this benchmark (repeatable)")
    args = parser.parse_args(argv)
    install_sigterm()
    results: dict[str, dict] = {}
    failed = False
    for name in names:
        if args.only and name not in args.only:
            continue
        console.rule(f"benchmark: {name}")
        try:
            if name in IN_PROCESS:
                module = IN_PROCESS[name]
                figures = module.run(module.parser().parse_args([]))
                save(name, figures)
                if not args.json:
                    print_table(name, module.rows(figures))
            else:
                figures = run_child(CHILD[name])
                if not args.json:
                    from rich.console import Console

                    Console().print_json(data=figures)
        except KeyboardInterrupt:
            console.print("[red]interrupted[/red]: the stack was taken down")
            return 130
        except Exception as error:  # noqa: BLE001 - report it and go on with the next benchmark
            console.print_exception()
            results[name] = {"error": repr(error)}
            failed = True
            continue
        results[name] = figures
    print(json.dumps(results, default=str), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
