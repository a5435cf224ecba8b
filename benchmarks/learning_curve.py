"""Does a variant learn? Train one variant and print FVD of the moving-average (EMA) and raw generators with
their 95% bootstrap intervals at every evaluation, then whether FVD fell beyond them and by how much.

    .venv/bin/vidgan ingest --sample --frames 16 --size 32 --stride 4 --out /tmp/lc-data
    .venv/bin/python benchmarks/learning_curve.py /tmp/lc-data --variant gp --iterations 600 --width 16

FVD of ``--n-fake`` generated (fixed latents) vs ``--n-real`` real clips, as a trial scores it. The figure
(``--out``, PNG) shows both curves with their intervals; ``--samples`` writes the final samples (EMA, raw, real:
GIF of the grid, PNG strip of frames). To look for the artefacts seen on the GPU (a darker, blurrier first
frame, checkerboard borders) it prints, for generated and real clips, each frame's mean brightness and
sharpness (mean |Laplacian|) relative to the clip's others, and the border pixels' high-frequency energy
relative to the interior's.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def frame_profile(clips: np.ndarray) -> dict[str, float]:
    """Artefact indicators of uint8 clips [N, T, H, W, 3]: the first frame's brightness and sharpness relative to
    the other frames' (1 = alike), the high-frequency energy of the 2-pixel border relative to the interior, and
    the pixels' SD across frames (flicker) and across clips (how much the clips differ: a generator that
    ignores its latent has little)."""
    x = clips.astype(np.float64).mean(-1)  # [N, T, H, W] grey
    lap = np.abs(4 * x[..., 1:-1, 1:-1] - x[..., :-2, 1:-1] - x[..., 2:, 1:-1] - x[..., 1:-1, :-2] - x[..., 1:-1, 2:])
    bright, sharp = x.mean((0, 2, 3)), lap.mean((0, 2, 3))
    hf = np.abs(np.diff(x, axis=-1))[..., :, :]  # horizontal differences [N, T, H, W-1]
    border = np.zeros(hf.shape[-2:], bool)
    border[:2, :], border[-2:, :], border[:, :2], border[:, -2:] = True, True, True, True
    return {
        "first_frame_brightness": float(bright[0] / bright[1:].mean()),
        "first_frame_sharpness": float(sharp[0] / sharp[1:].mean()),
        "border_vs_interior_hf": float(hf[..., border].mean() / hf[..., ~border].mean()),
        "sd_across_frames": float(clips.astype(np.float64).std(1).mean()),
        "sd_across_clips": float(clips.astype(np.float64).std(0).mean()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="shard directory (vidgan ingest)")
    p.add_argument("--variant", default="gp")
    p.add_argument("--iterations", type=int, default=600)
    p.add_argument("--every", type=int, default=100, help="iterations between evaluations (and one at 0)")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--z-dim", type=int, default=100)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--n-critic", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--ema-kimg", type=float, default=None, help="default: TrainConfig's")
    p.add_argument("--ema-rampup", type=float, default=None, help="default: TrainConfig's")
    p.add_argument("--n-real", type=int, default=56)
    p.add_argument("--n-fake", type=int, default=56)
    p.add_argument("--frames", type=int, default=16, help="frames scored by I3D")
    p.add_argument("--bootstrap", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="learning_curve.png", help="figure (PNG); a .json of the numbers beside it")
    p.add_argument("--samples", default=None, help="folder for the final sample GIFs/PNGs (default: none)")
    p.add_argument("--checkpoint", default=None, help="save the trainer here at the end (default: not saved)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from vidgan import shards
    from vidgan.config import ModelConfig, TrainConfig
    from vidgan.data import arrow_clip_batches
    from vidgan.fvd import FVDEvaluator, frechet_distance, frechet_distance_bootstrap, real_features
    from vidgan.trainer import Trainer
    from vidgan.variants import get_variant
    from vidgan.video import sample_clips

    shard_set = shards.describe(args.data)
    model = ModelConfig(frames=shard_set.frames, size=shard_set.height, width=args.width, z_dim=args.z_dim)
    ema = {k: v for k, v in (("ema_kimg", args.ema_kimg), ("ema_rampup", args.ema_rampup)) if v is not None}
    train = TrainConfig(batch_size=args.batch, n_critic=args.n_critic, lr=args.lr, seed=args.seed, **ema)
    trainer = Trainer(model, get_variant(args.variant), train, device="cpu")
    start = time.perf_counter()
    real = real_features(args.data, args.n_real, args.frames)
    evaluator = FVDEvaluator(real, args.n_fake, args.frames, batch_size=8, seed=args.seed, n_boot=args.bootstrap)
    print(f"{args.variant}: {model.frames}x{model.size}x{model.size}, width {args.width}, batch {args.batch}, "
          f"lr {args.lr:g}, EMA half-life {train.ema_kimg:g} kimg, ramp-up {train.ema_rampup}; FVD {args.n_fake} vs "
          f"{args.n_real} clips at {args.frames} frames; {shard_set.clips} clips in {args.data} "
          f"(real features {time.perf_counter() - start:.0f} s)", flush=True)
    batches = arrow_clip_batches(args.data, args.batch, flip=True, seed=args.seed)
    rows: list[dict[str, float]] = []
    window: list[dict[str, float]] = []

    def evaluate() -> None:
        t0 = time.perf_counter()
        out = {"iteration": trainer.iteration}
        for name, net in (("fvd", trainer.ema.module), ("fvd_raw", trainer.generator)):
            fake = evaluator.fake_features(net)
            out[name] = frechet_distance(real, fake)
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = frechet_distance_bootstrap(
                real, fake, n_boot=args.bootstrap, seed=args.seed
            )
        for key in ("wasserstein", "grad_norm", "penalty"):
            out[key] = float(np.mean([m[key] for m in window])) if window else float("nan")
        window.clear()
        out["eval_s"], out["elapsed_s"] = time.perf_counter() - t0, time.perf_counter() - start
        rows.append(out)
        print(f"it {out['iteration']:>5}  fvd(EMA) {out['fvd']:7.1f} [{out['fvd_ci_low']:7.1f}, "
              f"{out['fvd_ci_high']:7.1f}]  fvd_raw {out['fvd_raw']:7.1f} [{out['fvd_raw_ci_low']:7.1f}, "
              f"{out['fvd_raw_ci_high']:7.1f}]  W {out['wasserstein']:7.3f}  |g| {out['grad_norm']:5.2f}  "
              f"({out['eval_s']:.0f} s eval, {out['elapsed_s'] / 60:.1f} min)", flush=True)

    evaluate()
    while trainer.iteration < args.iterations:
        window.append(trainer.train_iteration(batches))
        if trainer.iteration % args.every == 0 or trainer.iteration == args.iterations:
            evaluate()

    print()
    def ci(r: dict, key: str) -> str:
        return f"{r[key]:.1f} [{r[key + '_ci_low']:.1f}, {r[key + '_ci_high']:.1f}]"

    for key, label in (("fvd", "EMA"), ("fvd_raw", "raw")):
        first, best, last = rows[0], min(rows[1:], key=lambda r: r[key]), rows[-1]
        for name, r in (("best", best), ("last", last)):
            fell = r[f"{key}_ci_high"] < first[f"{key}_ci_low"]
            print(f"{label}: FVD {ci(first, key)} at 0 -> {name} {ci(r, key)} at {r['iteration']}: "
                  f"{'fell beyond the intervals' if fell else 'no fall beyond the intervals'} "
                  f"(change {r[key] - first[key]:+.1f}, gap between the intervals "
                  f"{first[key + '_ci_low'] - r[key + '_ci_high']:+.1f})")
    swings = {k: np.abs(np.diff([r[k] for r in rows[1:]])).mean() for k in ("fvd", "fvd_raw")}
    print(f"mean swing between consecutive evaluations after 0: EMA {swings['fvd']:.1f}, raw {swings['fvd_raw']:.1f}")

    real_clips = next(iter(arrow_clip_batches(args.data, args.n_fake, shuffle=False)))
    real_np = real_clips.permute(0, 2, 3, 4, 1).numpy()  # [N, 3, T, H, W] -> [N, T, H, W, 3]
    z = evaluator.latents(model.z_dim)
    profiles = {"EMA": frame_profile(sample_clips(trainer.ema.module, z)),
                "raw": frame_profile(sample_clips(trainer.generator, z)), "real": frame_profile(real_np)}
    for name, prof in profiles.items():
        print(f"{name:>5} clips: " + ", ".join(f"{k} {v:.2f}" for k, v in prof.items()))
    write_outputs(args, rows, profiles, trainer, z, real_np)
    if args.checkpoint:
        print(f"checkpoint {trainer.save(args.checkpoint)}")


def write_outputs(args: argparse.Namespace, rows: list[dict], profiles: dict, trainer, z, real_np) -> None:  # noqa: ANN001
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "evaluations": rows, "profiles": profiles},
                                                   indent=1))
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    it = [r["iteration"] for r in rows]
    for key, label, colour in (("fvd", "EMA generator (fvd)", "C0"), ("fvd_raw", "raw generator (fvd_raw)", "C1")):
        ax.plot(it, [r[key] for r in rows], marker="o", ms=3, color=colour, label=label)
        ax.fill_between(it, [r[key + "_ci_low"] for r in rows], [r[key + "_ci_high"] for r in rows], color=colour,
                        alpha=0.2)
    ax.set_xlabel("generator iterations")
    ax.set_ylabel(f"FVD ({args.n_fake} vs {args.n_real} clips), 95% bootstrap band")
    ax.set_title(f"{args.variant}, width {args.width}, batch {args.batch}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    print(f"figure {out}, numbers {out.with_suffix('.json')}")
    if args.samples:
        from PIL import Image

        from vidgan.video import sample_clips, strip, tile, write_video

        folder = Path(args.samples)
        folder.mkdir(parents=True, exist_ok=True)
        for name, clips in (("ema", sample_clips(trainer.ema.module, z[:16])),
                            ("raw", sample_clips(trainer.generator, z[:16])), ("real", real_np[:16])):
            write_video(tile(clips), folder / f"{name}.gif")
            Image.fromarray(strip(clips, n_clips=6, n_frames=8)).save(folder / f"{name}.png")
        print(f"samples in {folder}/ (ema, raw, real: .gif grid, .png strip of frames)")


if __name__ == "__main__":
    main()
