"""Mutation testing: run mutmut on the modules listed in pyproject's [tool.mutmut] and report.

    python tools/mutation.py              # every listed module (about 13 minutes on 2 CPUs)
    python tools/mutation.py --quick      # only listed modules changed since --base (HEAD)

mutmut copies the sources into ./mutants/, runs the fast tests once to learn which tests reach
which function, then forks one warmed-up pytest per mutant running only those tests. A mutant
that no test kills is a gap in the suite, unless tests/mutation-equivalents.md lists it as
equivalent (same behaviour as the original) with a one-line reason. The exit code is 1 when a
survivor is not listed there, so the script can gate a change.
"""

from __future__ import annotations

import argparse
import fnmatch
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENTS = ROOT / "tests" / "mutation-equivalents.md"
KILLED = ("killed", "timeout", "segfault")


def listed_modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    return list(config["only_mutate"])


def changed_files(base: str) -> set[str]:
    """Files changed since ``base``, staged, unstaged or untracked."""
    def git(*args: str) -> list[str]:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True)
        return [line for line in out.stdout.splitlines() if line]

    return set(git("diff", "--name-only", base)) | set(
        git("ls-files", "--others", "--exclude-standard"))


def module_pattern(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".") + ".*"


def equivalent_names() -> set[str]:
    """Mutant names listed in tests/mutation-equivalents.md (first backticked word of a row)."""
    if not EQUIVALENTS.exists():
        return set()
    return set(re.findall(r"^\|\s*`([\w.ǁ]+__mutmut_\d+)`", EQUIVALENTS.read_text(), re.M))


def results(patterns: list[str]) -> dict[str, str]:
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    statuses = {}
    for line in out.splitlines():
        name, _, status = line.strip().partition(": ")
        if status and any(fnmatch.fnmatch(name, p) for p in patterns):
            statuses[name] = status
    return statuses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="only the listed modules changed since --base")
    parser.add_argument("--base", default="HEAD", help="git revision --quick compares against")
    parser.add_argument("--max-children", type=int, default=2, help="parallel mutant workers")
    args = parser.parse_args(argv)

    modules = listed_modules()
    if args.quick:
        changed = changed_files(args.base)
        modules = [m for m in modules if m in changed]
        if not modules:
            print(f"no mutated module changed since {args.base}: nothing to do")
            return 0
    patterns = [module_pattern(m) for m in modules]
    print("mutating:", ", ".join(modules), flush=True)
    run = subprocess.run([sys.executable, "-m", "mutmut", "run", *patterns,
                          "--max-children", str(args.max_children)], cwd=ROOT,
                         stdout=subprocess.DEVNULL)
    if run.returncode != 0:
        print(f"mutmut run failed with exit code {run.returncode}", file=sys.stderr)
        return run.returncode
    statuses = results(patterns)
    # a mutant that crashes the test process (a segfault) is caught as surely as a failed test
    killed = sum(s in KILLED for s in statuses.values())
    equivalent = equivalent_names()
    survivors = sorted(n for n, s in statuses.items() if s not in KILLED)
    unexplained = [n for n in survivors if n not in equivalent]
    listed = len(survivors) - len(unexplained)
    total = len(statuses)
    print(f"mutants {total}, killed {killed}, survived {len(survivors)} "
          f"({listed} listed as equivalent)")
    if total:
        print(f"score {killed / total:.1%} killed; "
              f"{(killed + listed) / total:.1%} killed or equivalent")
    for name in unexplained:
        print(f"  survived, not listed as equivalent: {name} ({statuses[name]})")
    if unexplained:
        print("inspect one with: python -m mutmut show <name>")
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
