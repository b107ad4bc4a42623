"""`sftrl parity`: arguments -> run, list or show the cases of the parity registry
(`sftrl.parity.cases`; the machinery is `sftrl.parity.registry`)."""

from __future__ import annotations

from shared.errors import SftrlError
from shared.progress import progress_bar


def add_arguments(p) -> None:
    from sftrl.parity.registry import LEVELS  # numpy only: cheap

    p.add_argument("--dtype", choices=("float32", "float64", "all"), default="all",
                   help="precision to run in (default: all)")
    p.add_argument("--level", choices=LEVELS, help="only the cases of one level")
    p.add_argument("--case", nargs="+", metavar="NAME", help="only these cases")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--html", metavar="PATH", help="also write one self-contained page to teach from: per case "
                   "the formula, the errors and the three sources side by side")
    p.add_argument("--show", metavar="CASE", help="print a case's formula and its NumPy, PyTorch and "
                   "TensorFlow source, side by side, and exit")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    """Exit 0 only if every selected case passes."""
    from sftrl.parity.cases import CASES
    from sftrl.parity.registry import DTYPES, format_table, results_json, run_case, select, show

    names = {c.name for c in CASES}
    if args.show is not None:
        if args.show not in names:
            raise SftrlError(f"--show: unknown case {args.show!r}; see 'sftrl parity --list'")
        print(show(next(c for c in CASES if c.name == args.show)))
        return 0
    if args.list:
        for case in CASES:
            print(f"{case.name:40s} {case.level:11s} {case.formula}")
        return 0
    unknown = [n for n in (args.case or []) if n not in names]
    if unknown:
        raise SftrlError(f"--case: unknown case {unknown[0]!r}; see 'sftrl parity --list'")
    cases = select(CASES, args.level, set(args.case) if args.case else None)
    dtypes = DTYPES if args.dtype == "all" else (args.dtype,)
    jobs = [(case, dtype) for case in cases for dtype in dtypes]
    results = []
    with progress_bar(len(jobs), "parity", "case", quiet=args.quiet, leave=False) as bar:
        for case, dtype in jobs:
            results.append(run_case(case, dtype))
            bar.update(1)
    print(format_table(results))
    failed = [r for r in results if not r.passed]
    print(f"\n{len(results) - len(failed)} passed, {len(failed)} failed")
    from shared.io import atomic_write_text
    if args.json:
        atomic_write_text(args.json, results_json(results) + "\n")
    if args.html:
        from sftrl.parity.page import page
        atomic_write_text(args.html, page(cases, results))
        print(f"wrote {args.html}")
    return 1 if failed else 0
