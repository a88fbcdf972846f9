"""Ratios of scenario pairs on one heroes server, the two sides interleaved round by round:

    PYTHONPATH=deploy .venv/bin/python -m bench.pairs [--rounds 8] [--seconds 3]

- ``post_keyed / post``: POST with a new Idempotency-Key per request vs without (target >= 0.7);
- ``get_list / get_list_last``: list-100 with a next page, so with the Link header, vs the last
  page of 100 reached by cursor, so without it (target >= 0.95).

The main benchmark (python -m bench) measures scenarios one after another; on a shared machine
the load of other processes drifts between them by more than these costs. Here each round runs
both sides back to back, in alternating order, so the drift falls on both alike.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
from pathlib import Path

from bench.deep_pages import heroes_on_postgres
from bench.load import LoadSettings, run_wrk, write_scripts

PAIRS = (("post_keyed", "post", 0.7), ("get_list", "get_list_last", 0.95))
SEEDED = 10_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pairs", description=__doc__)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=3, help="per side and round")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args(argv)
    settings = LoadSettings(
        duration=args.seconds, warmup=1, connections=args.connections, threads=1, timeout=10,
        seeded=SEEDED,
    )  # fmt: skip
    met = True
    with tempfile.TemporaryDirectory() as tmp, heroes_on_postgres(SEEDED) as port:
        scripts = write_scripts(Path(tmp))
        for measured, baseline, target in PAIRS:
            served = {measured: [0, 0.0], baseline: [0, 0.0]}
            for side in served:  # warm-up
                run_wrk(scripts[side], port, settings, 1, secrets.token_hex(4))
            for round_no in range(args.rounds):
                order = (measured, baseline) if round_no % 2 == 0 else (baseline, measured)
                for side in order:
                    run = run_wrk(scripts[side], port, settings, args.seconds, secrets.token_hex(4))
                    if run.non2xx or run.socket_errors:
                        print(f"{side}: {run.non2xx} non-2xx, {run.socket_errors} socket errors")
                        return 1
                    served[side][0] += run.requests
                    served[side][1] += run.duration_s
            rate = {side: n / seconds for side, (n, seconds) in served.items()}
            ratio = rate[measured] / rate[baseline]
            met &= ratio >= target
            print(
                f"{measured} / {baseline}: {rate[measured]:,.0f} / {rate[baseline]:,.0f} req/s = "
                f"{ratio:.2f}x (target >= {target}x: {'met' if ratio >= target else 'MISSED'})",
                flush=True,
            )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
