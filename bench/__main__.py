"""Run every benchmark in sequence with its default sizes: `python -m bench [--json] [--only NAME]`.

Each runs as a child process with --json (progress on this stderr) and prints its figures as it finishes
(not with --json); the last line on stdout is one JSON object with every benchmark's figures by name.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys

from rich.console import Console

from bench.common import PROJECT_ROOT, console, install_sigterm, uninterrupted

MODULES = {"ingest": "bench.ingest", "catchup": "bench.catchup", "stack": "bench.stack_bench",
           "import": "bench.import_bench", "archive": "bench.archive_bench", "rebuild": "bench.rebuild_bench",
           "train": "bench.train_bench", "stores": "bench.store_bench", "match": "bench.match_bench",
           "site": "bench.site_bench", "metrics": "bench.metrics_bench", "startup": "bench.startup_bench",
           "fuzz": "bench.fuzz", "sealing": "bench.sealing_cost"}


def run_child(module: str) -> dict:
    """A benchmark with --json: its figures from the last line of its stdout."""
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
    return json.loads([line for line in out.splitlines() if line.strip()][-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print only one JSON object on stdout")
    parser.add_argument("--only", choices=list(MODULES), action="append", help="run only this benchmark (repeatable)")
    args = parser.parse_args(argv)
    install_sigterm()
    results: dict[str, dict] = {}
    for name, module in MODULES.items():
        if args.only and name not in args.only:
            continue
        console.rule(f"benchmark: {name}")
        try:
            results[name] = run_child(module)
        except KeyboardInterrupt:
            console.print("[red]interrupted[/red]: the stack was taken down")
            return 130
        except Exception as error:  # noqa: BLE001 - report it and go on with the next benchmark
            console.print_exception()
            results[name] = {"error": repr(error)}
            continue
        if not args.json:
            Console().print_json(data=results[name])
    print(json.dumps(results, default=str), flush=True)
    return 1 if any("error" in figures for figures in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
