"""Import time: ``python -c "import nbexec"`` vs ``python -c "pass"``.

    python bench/import_time.py [--repeats 20] [--top 5]

Each is a whole interpreter start; the difference is the cost of
``import nbexec`` (which is meant to be lazy: no torch, mlflow, IPython).
Runs alternate to spread noise; one uncounted warmup of each first.
Target: median difference < 0.15 s.

Then ``python -X importtime -c "import nbexec"`` once, and the top entries
whose module name contains "nbexec" by cumulative time (microseconds), plus
the heaviest modules of any name pulled in by the import.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile

from _common import CommandFailed, median, noise_note, print_header, print_table, run_timed, verdict

TARGET_S = 0.15
CLI_LABEL = "python -c 'import nbexec.cli, nbexec.executor'"


def importtime_entries(code: str, cwd: str) -> list[tuple[int, int, str]]:
    """(self_us, cumulative_us, module) for each import line of ``-X importtime``."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False,
    )
    if proc.returncode != 0:
        raise CommandFailed(proc.stderr.decode(errors="replace")[-3000:])
    entries = []
    for line in proc.stderr.decode(errors="replace").splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        parts = line[len("import time:"):].split("|")
        if len(parts) != 3:
            continue
        try:
            entries.append((int(parts[0]), int(parts[1]), parts[2].rstrip()))
        except ValueError:
            continue
    return entries


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20, help="measured runs of each command (default 20)")
    parser.add_argument("--warmup", type=int, default=1, help="uncounted runs of each first (default 1)")
    parser.add_argument("--top", type=int, default=5, help="importtime entries to show (default 5, 0: skip)")
    parser.add_argument("--no-cli-imports", dest="cli_imports", action="store_false",
                        help="skip the informational `import nbexec.cli, nbexec.executor` timing")
    args = parser.parse_args()

    print_header(
        "import time: python -c 'import nbexec' vs python -c 'pass'",
        [f"repeats: {args.repeats} (+{args.warmup} warmup) each, alternating order"],
    )
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import nbexec'": [sys.executable, "-c", "import nbexec"],
    }
    if args.cli_imports:
        # what `nbexec train` imports before it launches anything (informational, no target)
        commands[CLI_LABEL] = [sys.executable, "-c", "import nbexec.cli, nbexec.executor"]
    times: dict[str, list[float]] = {name: [] for name in commands}
    # cwd: an empty temp dir, so nothing from the current folder shadows a module
    with tempfile.TemporaryDirectory(prefix="nbexec-bench-") as tmp:
        try:
            for i in range(args.warmup + args.repeats):
                order = list(commands) if i % 2 == 0 else list(reversed(commands))
                for name in order:
                    t = run_timed(commands[name], cwd=tmp, timeout=60)
                    if i >= args.warmup:
                        times[name].append(t)
            importtime_runs: dict[str, list[tuple[int, int, str]]] = {}
            at_start: set[str] = set()
            if args.top > 0:
                at_start = {e[2].strip() for e in importtime_entries("pass", tmp)}
                for code in ["import nbexec", *(["import nbexec.cli, nbexec.executor"] if args.cli_imports else [])]:
                    importtime_runs[code] = importtime_entries(code, tmp)
        except CommandFailed as err:
            print(err, file=sys.stderr)
            return 1

    base, imp = times["python -c pass"], times["python -c 'import nbexec'"]
    print()
    print_table(
        ["command", "median ms", "min ms", "max ms", "n"],
        [[name, f"{median(v) * 1e3:.1f}", f"{min(v) * 1e3:.1f}", f"{max(v) * 1e3:.1f}", len(v)]
         for name, v in times.items()],
    )
    pair_diffs = [b - a for a, b in zip(base, imp)]
    print()
    print(f"per-pair difference: median {median(pair_diffs) * 1e3:.1f} ms, "
          f"range {min(pair_diffs) * 1e3:.1f}..{max(pair_diffs) * 1e3:.1f} ms")
    for code, found in importtime_runs.items():
        new = [e for e in found if e[2].strip() not in at_start]  # not already loaded by `python -c pass`
        ours = sorted((e for e in new if "nbexec" in e[2]), key=lambda e: -e[1])[: args.top]
        print(f"\n-X importtime `{code}`: top {len(ours)} nbexec entries (cumulative):")
        print_table(["module", "self us", "cumulative us"], [[m.strip(), s, c] for s, c, m in ours])
        heavy = sorted((e for e in new if "nbexec" not in e[2]), key=lambda e: -e[1])[: args.top]
        print(f"-X importtime `{code}`: top {len(heavy)} other modules it adds (cumulative):")
        print_table(["module", "self us", "cumulative us"], [[m.strip(), s, c] for s, c, m in heavy])
        names = sorted(e[2].strip() for e in new)
        listed = ", ".join(names) if len(names) <= 12 else ", ".join(names[:12]) + ", ..."
        print(f"modules imported beyond `python -c pass`: {len(new)} ({listed})")
    if CLI_LABEL in times:
        cli = times[CLI_LABEL]
        print(f"\n(informational) `nbexec train` import cost, nbexec.cli + nbexec.executor: "
              f"median {(median(cli) - median(base)) * 1e3:.1f} ms over bare python")
    print()
    print(noise_note(times))
    diff_med = median(imp) - median(base)
    diff_min = min(imp) - min(base)
    print(
        f"RESULT import nbexec cost: median {diff_med:.4f} s, min {diff_min:.4f} s"
        f"  target < {TARGET_S:.2f} s: {verdict(diff_med < TARGET_S)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
