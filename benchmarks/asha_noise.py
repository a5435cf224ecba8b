"""How often does ASHA keep the truly best variant, when evaluations are as noisy as we measured?

Synthetic trials with known true curves are fed to Tune's real ``ASHAScheduler`` through the calls Tune's
controller makes (``on_trial_add``, ``on_trial_result`` per evaluation, ``on_trial_complete`` when a trial
stops), ``--concurrency`` trials at a time in the grid's order, as a sweep runs them. Each evaluation of a trial
reports ``fvd`` = true curve + the seed's offset + evaluation noise, and ``fvd_smooth`` by the rule under test
(:class:`tune_jobs.spec.SmoothingSpec`, the code the trials use). ASHA decides on ``fvd_smooth``.

Noise, from ``../shared/notes/gpu.md`` (FVD of 256 vs 256 clips every 50-150 iterations on an H100): about a
linear trend the residual SD of the three sequences is 81 (gp), 104 (sn_gp) and 139 (sn), RMS 110; the mean
swing between consecutive evaluations is 99-187. Default ``--noise 110``. Gaps: the demo's first rung
separates its variants by 30-70 FVD, so ``--gap 50`` between consecutive variants' true levels (variant 0 is
the best). The seed-to-seed offset (``--seed-sd``) was not measured; 40 is a guess, also swept.

Printed per setting: P(survive) = the probability that at least one trial of the best variant reaches max_t;
P(rank 1) = the probability that the comparison table (tune_jobs.report.aggregate of each trial's best
``fvd``) ranks it first or tied first (with one seed every variant ties); P(top mean) = that it has the
lowest mean. The best variant's place in the spec's order is drawn at random for each sweep.

    .venv/bin/python benchmarks/asha_noise.py                      # an earlier demo's layout, 1-3 seeds
    .venv/bin/python benchmarks/asha_noise.py --seeds 2 --reps 2000 --seed 1          # docs/comparisons.md's line
    .venv/bin/python benchmarks/asha_noise.py --variants 2 --seeds 2 --every 300 --grace 300 --max-t 900 --rf 3 \
        --rules none,best_so_far,mean_last:2 --reps 1000 --seed 1  # today's demo.yaml
    .venv/bin/python benchmarks/asha_noise.py --variants 6 --seeds 3 --every 1 --grace 8 --max-t 64 --rf 2 \
        --concurrency 12                                           # paper.yaml's layout, in thousands of iterations
"""

from __future__ import annotations

import argparse
import itertools
import math
import time

import numpy as np


class _Trial:
    def __init__(self, trial_id: str, variant: int, seed: int) -> None:
        self.trial_id, self.variant, self.seed = trial_id, variant, seed


def simulate(
    *,
    variants: int,
    seeds: int,
    every: int,
    grace: int,
    max_t: int,
    rf: float,
    rule: str,
    k: int,
    noise: float,
    gap: float,
    seed_sd: float,
    trend: float,
    rho: float,
    concurrency: int,
    seed_major: bool,
    rng: np.random.Generator,
) -> tuple[bool, bool, bool, int, int]:
    """One sweep: (a trial of variant 0 reached max_t, the table ranks variant 0 first or tied first, variant 0
    has the lowest mean, iterations trained, evaluations made)."""
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    from tune_jobs.report import TrialRow, aggregate
    from tune_jobs.spec import SmoothingSpec

    smoothing = SmoothingSpec(rule=rule, k=k)
    scheduler = ASHAScheduler(
        time_attr="iteration", metric="fvd_smooth", mode="min", max_t=max_t, grace_period=grace, reduction_factor=rf
    )
    # the spec's variant order is arbitrary: the best variant's place in it is drawn at random
    order = rng.permutation(variants)
    if seed_major:  # the sweep's grid: every variant's seed 0, then every variant's seed 1, ...
        pending = [_Trial(f"t{v}_{s}", v, s) for s, v in itertools.product(range(seeds), order)]
    else:
        pending = [_Trial(f"t{v}_{s}", v, s) for v, s in itertools.product(order, range(seeds))]
    offsets = {t.trial_id: rng.normal(0.0, seed_sd) for t in pending}
    evals = list(range(every, max_t + 1, every))
    if evals[-1] != max_t:
        evals.append(max_t)
    history: dict[str, list[float]] = {t.trial_id: [] for t in pending}
    last_noise: dict[str, float] = {}
    ended: dict[str, int] = {}
    running: list[_Trial] = []
    while pending or running:
        while pending and len(running) < concurrency:
            trial = pending.pop(0)
            scheduler.on_trial_add(None, trial)
            running.append(trial)
        trial = running.pop(0)  # round robin: trials of equal speed take turns
        h = history[trial.trial_id]
        t = evals[len(h)]
        e = rng.normal(0.0, noise)
        if rho and trial.trial_id in last_noise:  # AR(1) evaluation noise with the same marginal SD
            e = rho * last_noise[trial.trial_id] + math.sqrt(1.0 - rho**2) * e
        last_noise[trial.trial_id] = e
        true = 1000.0 + gap * trial.variant - trend * t / max_t + offsets[trial.trial_id]
        h.append(true + e)
        result = {"iteration": t, "fvd": h[-1], "fvd_smooth": smoothing.apply(h)}
        decision = scheduler.on_trial_result(None, trial, result)
        if decision == TrialScheduler.STOP or t >= max_t:
            scheduler.on_trial_complete(None, trial, result)
            ended[trial.trial_id] = t
        else:
            running.append(trial)
    survived = any(ended[f"t0_{s}"] >= max_t for s in range(seeds))
    rows = [
        TrialRow(tid, f"v{tid[1:].split('_')[0]}", "d", int(tid.split("_")[1]),
                 "completed" if ended[tid] >= max_t else "stopped_by_asha", best_fvd=min(h))
        for tid, h in history.items()
    ]
    table = aggregate(rows)
    cost = sum(ended.values()), sum(len(h) for h in history.values())
    return survived, next(v.rank for v in table if v.variant == "v0") == 1, table[0].variant == "v0", *cost


def run(args: argparse.Namespace, rule: str, k: int, seeds: int, reps: int) -> tuple[float, ...]:
    rng = np.random.default_rng(args.seed)
    outcomes = [
        simulate(
            variants=args.variants, seeds=seeds, every=args.every, grace=args.grace, max_t=args.max_t, rf=args.rf,
            rule=rule, k=k, noise=args.noise, gap=args.gap, seed_sd=args.seed_sd, trend=args.trend, rho=args.rho,
            concurrency=args.concurrency, seed_major=args.order == "seed", rng=rng,
        )
        for _ in range(reps)
    ]
    return tuple(float(np.mean([o[i] for o in outcomes])) for i in range(5))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", type=int, default=3)
    p.add_argument("--seeds", type=int, default=0, help="seeds per variant (0: print 1, 2 and 3)")
    p.add_argument("--every", type=int, default=5, help="iterations between evaluations")
    p.add_argument("--grace", type=int, default=10, help="ASHA grace period (first rung)")
    p.add_argument("--max-t", type=int, default=15)
    p.add_argument("--rf", type=float, default=2.0, help="ASHA reduction factor")
    p.add_argument("--noise", type=float, default=110.0, help="SD of one evaluation's FVD about the true curve")
    p.add_argument("--gap", type=float, default=50.0, help="true FVD gap between consecutive variants")
    p.add_argument("--seed-sd", type=float, default=40.0, help="SD of a seed's offset from its variant's curve")
    p.add_argument("--trend", type=float, default=100.0, help="true FVD fall from iteration 0 to max_t")
    p.add_argument("--rho", type=float, default=0.0, help="lag-1 autocorrelation of the evaluation noise")
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--order", choices=["seed", "variant"], default="variant",
                   help="launch order: variant-major (what a vidgan sweep grid does: the seeds of a variant in a row)")
    p.add_argument("--reps", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rules", default="none,best_so_far,mean_last:3,mean_last:5")
    args = p.parse_args()

    print(f"{args.variants} variants, gap {args.gap:g}, evaluation noise SD {args.noise:g} (AR1 rho {args.rho:g}), "
          f"seed SD {args.seed_sd:g}, trend {args.trend:g}; eval every {args.every}, ASHA grace {args.grace}, "
          f"rf {args.rf:g}, max_t {args.max_t}; {args.concurrency} trials at a time; {args.reps} sweeps per line")
    print(f"{'rule':<14}{'seeds':>6}{'P(survive)':>12}{'P(rank 1)':>11}{'P(top mean)':>13}{'iterations':>12}"
          f"{'evaluations':>13}   (means per sweep; binomial SE <= {0.5 / math.sqrt(args.reps):.3f})")
    for item in args.rules.split(","):
        rule, _, k = item.partition(":")
        for seeds in [args.seeds] if args.seeds else [1, 2, 3]:
            t0 = time.perf_counter()
            survive, first, top, iters, evals = run(args, rule, int(k or 1) or 1, seeds, args.reps)
            label = rule + (f" k={k}" if rule == "mean_last" else "")
            rank = f"{first:>11.3f}" if seeds > 1 else f"{'-':>11}"  # one seed: no test, every variant ties
            print(f"{label:<14}{seeds:>6}{survive:>12.3f}{rank}{top:>13.3f}{iters:>12.0f}{evals:>13.1f}   "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
