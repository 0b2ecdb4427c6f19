"""``python -m bench [names...] [--repeats N] [--quick]`` (what ``./dev bench`` runs).

Runs the named benchmarks (default: all of the issue's), each printing its table
and writing ``bench/results/<name>.json`` (``<name>.quick.json`` with --quick, which
is a smoke check of the harness at reduced sizes, not a measurement). Exit status 1
if any figure misses its target.

A benchmark is a module of this package with ``NAME``, ``DESCRIPTION`` and
``measure(options) -> Report`` (see bench/common.py). ``k8s`` (the Kubernetes
adapter's figures) is run when bench/k8s.py exists.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import tempfile
import time

from bench.common import PROJECT_DIR, SOURCE_ENV, Report, add_arguments, options_from, run_benchmark

# In the order.
BENCHMARKS = ("fire_lag", "burst", "idle", "startup_memory", "scale", "selfsched", "k8s", "peer",
              "shards")
# Not in the default set: the cron library comparison that chose cronsim (no targets).
EXTRAS = ("cron_libraries", "console", "retention")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS + EXTRAS)}")
    add_arguments(parser)
    parser.add_argument("--at", metavar="REF",
                        help="measure src/ as committed at REF (e.g. HEAD), not the working tree: "
                             "for a tree being edited meanwhile, or to compare commits")
    args = parser.parse_args(argv)
    if args.at:
        return at_commit(args.at, sys.argv[1:] if argv is None else argv)
    unknown = [n for n in args.names if n not in BENCHMARKS + EXTRAS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    names = args.names or list(BENCHMARKS)
    options = options_from(args)

    reports: list[Report] = []
    began = time.time()
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        if name in EXTRAS:
            print(f"\n== {name}")
            module.main()
            continue
        reports.append(run_benchmark(module.NAME, module.measure, options))

    failed = [(r.name, f.label) for r in reports for f in r.figures if f.passed is False]
    print(f"\n{len(reports)} benchmark(s) in {time.time() - began:.0f} s; "
          + ("all targets met" if not failed else
             "missed: " + "; ".join(f"{name}: {label}" for name, label in failed)))
    return 1 if failed else 0


def at_commit(ref: str, argv: list[str]) -> int:
    """Run the same command against ``git archive <ref> src`` in a temporary directory,
    first on PYTHONPATH (so ahead of the editable install) for the bench and every
    process it starts."""
    sha = subprocess.run(["git", "rev-parse", "--short", ref], cwd=PROJECT_DIR, check=True,
                         capture_output=True, text=True).stdout.strip()
    rest, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--at":
            skip = True
        elif not arg.startswith("--at="):
            rest.append(arg)
    with tempfile.TemporaryDirectory(prefix=f"sympozium-bench-src-{sha}-") as snapshot:
        archive = subprocess.run(["git", "archive", sha, "src"], cwd=PROJECT_DIR, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", snapshot], input=archive, check=True)
        src = os.path.join(snapshot, "src")
        env = dict(os.environ, **{SOURCE_ENV: f"{sha}:{src}"})
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, str(PROJECT_DIR), env.get("PYTHONPATH")]))
        print(f"measuring src/ at {sha} (a snapshot in {snapshot})", flush=True)
        return subprocess.run([sys.executable, "-m", "bench", *rest], cwd=PROJECT_DIR, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
