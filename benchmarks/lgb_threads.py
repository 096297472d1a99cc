"""``python -m benchmarks.lgb_threads``: one trainer trial (a 3-fold ``lgb.cv``) under each OpenMP
wait policy, side by side in alternating rounds, on a machine whose cores are also busy.

Why: on a small machine the trainer shares its cores with a predictor and a broker. LightGBM's
OpenMP threads spin while they wait by default (``OMP_WAIT_POLICY=ACTIVE``), and a spinning thread
takes a core that another process needs. This measures the default against passive waiting and
against one thread (``STREAMFIT_NUM_THREADS=1``), quiet (``--load 0``) and with ``--load N`` busy
processes; each runs in a fresh interpreter, since OpenMP reads its variables when it loads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

TRIAL = """
import time, lightgbm as lgb
from benchmarks.recovery.streams import StreamSpec, make_stream
s = make_stream(StreamSpec(name="none", seed=3, rows={rows}, drift_at={rows} // 2, width=1))
y = s.frame[s.target].astype(int).values
x = s.frame.drop(columns=[s.target]).select_dtypes("number").values
ds = lgb.Dataset(x, y, params={{"verbosity": -1, "feature_pre_filter": False}}).construct()
params = {{"objective": "binary", "metric": "binary_logloss", "learning_rate": 0.05, "num_leaves": 31,
          "verbosity": -1}}
lgb.cv(params, ds, num_boost_round=20, nfold=3, seed=0)  # warm-up
t = time.perf_counter()
lgb.cv(params, ds, num_boost_round=300, nfold=3, seed=0)
print(time.perf_counter() - t)
"""

POLICIES = {
    "spinning (OpenMP default)": {"OMP_WAIT_POLICY": "ACTIVE"},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "one thread": {"OMP_NUM_THREADS": "1"},
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.lgb_threads", description=__doc__)
    p.add_argument("--rows", type=int, default=3600, help="training rows (default 3600: an early cycle)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    p.add_argument("--load", type=int, default=2, help="busy processes beside the trial (default 2)")
    args = p.parse_args(argv)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    seconds: dict[str, list[float]] = {name: [] for name in POLICIES}
    try:
        for _ in range(args.rounds):
            for name, env in POLICIES.items():
                out = subprocess.run(
                    [sys.executable, "-c", TRIAL.format(rows=args.rows)],
                    env={**os.environ, **env}, capture_output=True, text=True, check=False,
                )  # fmt: skip
                if out.returncode != 0:
                    raise SystemExit(f"the trial failed:\n{out.stderr[-2000:]}")
                seconds[name].append(float(out.stdout.strip().splitlines()[-1]))
    finally:
        for proc in busy:
            proc.kill()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"{when}: lgb.cv, 3 folds x 300 rounds, {args.rows} rows, {args.load} busy processes, {os.cpu_count()} cores")
    base = statistics.median(seconds["spinning (OpenMP default)"])
    for name, values in seconds.items():
        median = statistics.median(values)
        runs = ", ".join(f"{v:.2f}" for v in values)
        print(f"  {name:28s} median {median:.2f} s ({runs}); {median / base:.2f}x the default")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
