"""Run the benchmarks: ``python -m benchmarks`` (the standard set, under 15 minutes on a 2-core CPU),
``python -m benchmarks all`` (every one, about 45 minutes there) or ``python -m benchmarks world methods`` (by name).

Each ``benchmarks/bench_<name>.py`` defines ``run(quick: bool) -> dict``: it prints its figures as ratios
measured side by side in this run and returns what goes into its JSON record under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time
from pathlib import Path

from benchmarks.common import write_record


def available() -> list[str]:
    here = Path(__file__).resolve().parent
    return sorted(m.name[len("bench_") :] for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))


# The standard set: the performance targets (perf) and the cheap ones. The others measure design choices at
# length (every method's step cost, the shift estimators, the world's model sizes); run them by name.
STANDARD = ("perf", "text", "data", "scale")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "names", nargs="*", help=f"benchmarks to run, or all (default: {' '.join(STANDARD)}): {', '.join(available())}"
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions; a smoke run of the suite")
    args = parser.parse_args(argv)
    names = available() if args.names == ["all"] else args.names or [n for n in STANDARD if n in available()]
    if not args.names:
        rest = sorted(set(available()) - set(names))
        print(f"standard set: {' '.join(names)}; also available by name: {' '.join(rest)} (or: all)", flush=True)
    unknown = sorted(set(names) - set(available()))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; available: {available()}")
    t0 = time.perf_counter()
    for name in names:
        print(f"== {name}", flush=True)
        module = importlib.import_module(f"benchmarks.bench_{name}")
        start = time.perf_counter()
        record = module.run(quick=args.quick)
        record["seconds"] = time.perf_counter() - start
        print(f"   record: {write_record(name, record)}  ({record['seconds']:.0f} s)", flush=True)
    print(f"all benchmarks: {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
