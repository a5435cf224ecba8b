"""Does it learn? Train loss variants on the squares data on the CPU and print their learning score and FVD.

    .venv/bin/vidgan ingest --synthetic squares --clips 2048 --frames 16 --size 32 --out data/squares-16x32
    .venv/bin/python benchmarks/convergence.py data/squares-16x32 --variants gp zero_gp sn --minutes 10

Each contender trains in turn (one at a time, ``--threads`` threads) until ``--iterations`` or ``--minutes`` runs
out. Every ``--every`` iterations it is scored on 64 fixed latents by :mod:`vidgan.squares_score` (the fraction
of frames holding exactly one square on a clean background, the fraction of clips whose square moves at constant
velocity between bounces, the background's error and the spread across clips), and every ``--fvd-every``
iterations by FVD (I3D, ``--n-fake`` generated vs ``--n-real`` real clips at 16 frames) with its 95% bootstrap
interval. Ours are scored through their moving average (EMA, what trials sample) and raw weights.

Contenders:

- ``--variants``: vidgan's trainer with these presets at the defaults (``TrainConfig()``, the preset's switches),
  except what ``--lr``/``--betas``/``--n-critic``/``--batch``/``--width``, ``--set KEY=VALUE`` (a Variant
  field, e.g. ``layer_norm=true``), ``--model KEY=VALUE`` (a ModelConfig field, e.g. ``minibatch_std=0``) and
  ``--train KEY=VALUE`` (a TrainConfig field, e.g. ``critic_lr_ratio=4``) say;
- ``--minimal``: an independent minimal WGAN-GP written here (a plain DCGAN-style 3D GAN, PyTorch's default
  init, Adam (0.5, 0.9), lambda 10, 5 critic updates), on the same data, batch and width;
- ``--paper-code PATH``: a checkout of talcron/frame-prediction-pytorch (the paper's code), whose models are
  fixed to 32 frames of 64x64 at width 64: it trains on squares clips of that shape made in memory
  (:func:`vidgan.synthetic.squares_clips`), for the same wall time, and is scored like the others.

Prints one line per evaluation, then a summary (when each goal was first met: ``one_square >= 0.8``,
``smooth_motion >= 0.5``, diversity >= half the real clips'), and writes a figure (``--out``, PNG), the
numbers beside it (.json) and the last samples of each contender (``--samples``: a PNG strip per contender, and
every scored clip in a .npz).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

GOALS = {"one_square": 0.8, "smooth_motion": 0.5}  # and diversity >= half the real clips'


# --------------------------------------------------------------------------- the minimal WGAN-GP
class MinimalGenerator(nn.Module):
    """DCGAN-style: Linear -> BN + ReLU -> 3 x (ConvTranspose3d k4 s2 p1, BN + ReLU) -> ConvTranspose3d -> tanh.
    Batch norm always uses batch statistics (sampled as in training), PyTorch's default init."""

    def __init__(self, frames: int, size: int, width: int, z_dim: int) -> None:
        super().__init__()
        self.z_dim, self.top = z_dim, 8 * width
        self.t0, self.s0 = frames // 16, size // 16
        self.fc = nn.Linear(z_dim, self.top * self.t0 * self.s0 * self.s0)
        chans = [8 * width, 4 * width, 2 * width, width, 3]
        layers: list[nn.Module] = [nn.BatchNorm3d(self.top, track_running_stats=False), nn.ReLU()]
        for i, (c_in, c_out) in enumerate(itertools.pairwise(chans)):
            layers.append(nn.ConvTranspose3d(c_in, c_out, 4, 2, 1))
            if i < len(chans) - 2:
                layers += [nn.BatchNorm3d(c_out, track_running_stats=False), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(-1, self.top, self.t0, self.s0, self.s0))


class MinimalCritic(nn.Module):
    """Four Conv3d k4 s2 p1 + LeakyReLU(0.2), no normalisation, a Linear head."""

    def __init__(self, frames: int, size: int, width: int) -> None:
        super().__init__()
        chans = [3, width, 2 * width, 4 * width, 8 * width]
        layers: list[nn.Module] = []
        for c_in, c_out in itertools.pairwise(chans):
            layers += [nn.Conv3d(c_in, c_out, 4, 2, 1), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(8 * width * (frames // 16) * (size // 16) ** 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.net(x)).squeeze(1)


class MinimalWGANGP:
    """Gulrajani et al.'s algorithm, as short as it gets: 5 critic updates (GP at interpolates, lambda 10), then
    one generator update; Adam lr 1e-4, betas (0.5, 0.9)."""

    def __init__(self, frames: int, size: int, width: int, z_dim: int, batch: int, seed: int) -> None:
        torch.manual_seed(seed)
        self.generator = MinimalGenerator(frames, size, width, z_dim)
        self.critic = MinimalCritic(frames, size, width)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=1e-4, betas=(0.5, 0.9))
        self.opt_d = torch.optim.Adam(self.critic.parameters(), lr=1e-4, betas=(0.5, 0.9))
        self.batch, self.iteration = batch, 0

    def train_iteration(self, batches: Iterator[torch.Tensor]) -> None:
        from vidgan.trainer import to_model_range

        for _ in range(5):
            real = to_model_range(next(batches), torch.device("cpu"))
            with torch.no_grad():
                fake = self.generator(torch.randn(self.batch, self.generator.z_dim))
            alpha = torch.rand(self.batch, 1, 1, 1, 1)
            x = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
            (grad,) = torch.autograd.grad(self.critic(x).sum(), x, create_graph=True)
            gp = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
            loss = self.critic(fake).mean() - self.critic(real).mean() + 10 * gp
            self.opt_d.zero_grad()
            loss.backward()
            self.opt_d.step()
        loss = -self.critic(self.generator(torch.randn(self.batch, self.generator.z_dim))).mean()
        self.opt_g.zero_grad()
        loss.backward()
        self.opt_g.step()
        self.iteration += 1


# --------------------------------------------------------------------------- contenders
@dataclass
class Contender:
    """A training loop under test: ``step()`` runs one iteration; ``generators`` are what gets scored."""

    name: str
    step: Callable[[], None]
    generators: dict[str, nn.Module]
    z_dim: int
    rows: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0  # training time so far (evaluations excluded)


def make_ours(args: argparse.Namespace, name: str, model, batches: Iterator[torch.Tensor]) -> Contender:  # noqa: ANN001
    from vidgan.config import TrainConfig
    from vidgan.trainer import Trainer
    from vidgan.variants import get_variant

    overrides = dict(args.set)
    train = {k: v for k, v in (("lr", args.lr), ("betas", args.betas), ("n_critic", args.n_critic)) if v is not None}
    train.update(args.train)
    trainer = Trainer(model, get_variant(name, **overrides), TrainConfig(batch_size=args.batch, seed=args.seed,
                                                                         **train), device="cpu")
    gens = {"ema": trainer.ema.module, "raw": trainer.generator} if trainer.ema else {"raw": trainer.generator}
    label = name + "".join(f" {k}={v}" for k, v in [*overrides.items(), *args.model, *args.train])
    return Contender(label, lambda: trainer.train_iteration(batches), gens, model.z_dim)


def make_paper(args: argparse.Namespace) -> Contender:
    """The paper's code on squares clips at its fixed shape (32 x 64 x 64), made in memory."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from train_step import PAPER_SHAPE, _import_paper_runner, _NullExperiment

    from vidgan.synthetic import squares_clips
    from vidgan.trainer import to_model_range

    runner = _import_paper_runner(Path(args.paper_code).resolve())
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    gan = runner.ImprovedVideoGAN(dataloader=None, experiment=_NullExperiment(), device=torch.device("cpu"),
                                  num_gpu=1, batch_size=args.batch, num_frames=PAPER_SHAPE["frames"],
                                  crop_size=PAPER_SHAPE["size"], learning_rate=1e-4, z_dim=PAPER_SHAPE["z_dim"],
                                  critic_iterations=5, out_dir=os.path.join(args.workdir, "paper"))
    gan.step = gan.critic_iterations
    index = itertools.count()
    devnull = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the benchmark

    def step() -> None:
        with contextlib.redirect_stdout(devnull):
            for _ in range(gan.critic_iterations + 1):
                gan._increment_total_step()
                clips = squares_clips(args.batch, PAPER_SHAPE["frames"], PAPER_SHAPE["size"], next(index))
                critic_turn = (gan.step + 1) % (gan.critic_iterations + 1) != 0
                gan.optimize(to_model_range(clips, torch.device("cpu")),
                             runner.DISCRIMINATOR if critic_turn else runner.GENERATOR)

    class Sampler(nn.Module):  # their generator draws z ~ U[0, 1): map our fixed N(0, 1) latents through the CDF
        def __init__(self) -> None:
            super().__init__()
            self.g, self.z_dim = gan.generator, PAPER_SHAPE["z_dim"]

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return self.g(0.5 * (1 + torch.erf(z / 2**0.5)))

    return Contender("paper code (32x64x64)", step, {"raw": Sampler()}, PAPER_SHAPE["z_dim"])


# --------------------------------------------------------------------------- scoring
def score_row(c: Contender, z: torch.Tensor, evaluator, real_feats, fvd: bool, args) -> dict[str, float]:  # noqa: ANN001
    from vidgan.squares_score import squares_score
    from vidgan.video import sample_clips

    row: dict[str, float] = {}
    for kind, gen in c.generators.items():
        clips = sample_clips(gen, z[:, : c.z_dim])
        row.update(squares_score(clips).as_dict(f"{kind}_"))
        if fvd and evaluator is not None:
            from vidgan.fvd import frechet_distance, frechet_distance_bootstrap

            fake = evaluator.fake_features(gen)
            row[f"{kind}_fvd"] = frechet_distance(real_feats, fake)
            row[f"{kind}_fvd_lo"], row[f"{kind}_fvd_hi"] = frechet_distance_bootstrap(
                real_feats, fake, n_boot=args.bootstrap, seed=args.seed)
    return row


def fmt(row: dict[str, float], kind: str) -> str:
    s = (f"{kind}: one {row[f'{kind}_one_square']:.2f} smooth {row[f'{kind}_smooth_motion']:.2f} "
         f"bg {row[f'{kind}_background_error']:5.1f} div {row[f'{kind}_diversity']:4.1f}")
    if f"{kind}_one_object" in row:  # how far from a square: one object per frame, its box's side and fill
        s += (f" obj {row[f'{kind}_one_object']:.2f} side {row[f'{kind}_object_side']:4.1f}"
              f" fill {row[f'{kind}_object_fill']:.2f}")
    if f"{kind}_fvd" in row:
        s += f" fvd {row[f'{kind}_fvd']:.0f} [{row[f'{kind}_fvd_lo']:.0f}, {row[f'{kind}_fvd_hi']:.0f}]"
    return s


def goal_met(row: dict[str, float], kind: str, real_div: float) -> bool:
    return (row[f"{kind}_one_square"] >= GOALS["one_square"] and row[f"{kind}_smooth_motion"] >= GOALS["smooth_motion"]
            and row[f"{kind}_diversity"] >= 0.5 * real_div)


def run(c: Contender, args: argparse.Namespace, z: torch.Tensor, evaluator, real_feats, real_div: float) -> None:  # noqa: ANN001
    it = 0
    while True:
        fvd = it == 0 or (args.fvd_every > 0 and it % args.fvd_every == 0)
        last = it >= args.iterations or c.seconds >= args.minutes * 60
        row = {"iteration": it, "train_s": c.seconds, **score_row(c, z, evaluator, real_feats, fvd or last, args)}
        c.rows.append(row)
        print(f"{c.name:>24} it {it:5d} {c.seconds / 60:5.1f} min  " + "  ".join(fmt(row, k) for k in c.generators),
              flush=True)
        if last:
            return
        t0 = time.perf_counter()
        for _ in range(args.every):
            c.step()
            it += 1
            if c.seconds + time.perf_counter() - t0 >= args.minutes * 60 or it >= args.iterations:
                break
        c.seconds += time.perf_counter() - t0


def summary(contenders: list[Contender], real_div: float) -> None:
    print(f"\ngoals: one_square >= {GOALS['one_square']}, smooth_motion >= {GOALS['smooth_motion']}, diversity >= "
          f"{0.5 * real_div:.1f} (half the real clips' {real_div:.1f})")
    for c in contenders:
        for kind in c.generators:
            hit = next((r for r in c.rows if goal_met(r, kind, real_div)), None)
            best = max(c.rows, key=lambda r: (r[f"{kind}_one_square"], r[f"{kind}_smooth_motion"]))
            last = c.rows[-1]
            when = (f"met at iteration {hit['iteration']} ({hit['train_s'] / 60:.1f} min of training)" if hit
                    else "not met")
            print(f"{c.name:>24} {kind:>3}: {when}; best {fmt(best, kind)} at {best['iteration']}; "
                  f"last ({last['iteration']} it, {last['train_s'] / 60:.1f} min) {fmt(last, kind)}")


def plot(contenders: list[Contender], path: Path, real_div: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 7), dpi=90)
    panels = (("one_square", "frames with one square"), ("smooth_motion", "clips with smooth motion"),
              ("background_error", "background error (0-255)"), ("diversity", "spread across clips (0-255)"),
              ("fvd", "FVD, 95% bootstrap band"), ("one_object", "frames with one object (any shape)"))
    for ax, (key, title) in zip(axes.flat, panels, strict=False):
        for i, c in enumerate(contenders):
            for kind, style in (("ema", "-"), ("raw", ":")):
                rows = [r for r in c.rows if f"{kind}_{key}" in r]
                if kind not in c.generators or not rows:
                    continue
                x = [r["train_s"] / 60 for r in rows]
                ax.plot(x, [r[f"{kind}_{key}"] for r in rows], style, marker="o", ms=2, color=f"C{i}",
                        label=f"{c.name} ({kind})")
                if key == "fvd":
                    ax.fill_between(x, [r[f"{kind}_fvd_lo"] for r in rows], [r[f"{kind}_fvd_hi"] for r in rows],
                                    color=f"C{i}", alpha=0.15)
        if key in GOALS:
            ax.axhline(GOALS[key], color="grey", lw=0.8, ls="--")
        if key == "diversity":
            ax.axhline(real_div, color="black", lw=0.8, label="real clips")
            ax.axhline(real_div / 2, color="grey", lw=0.8, ls="--")
        ax.set_title(title)
        ax.set_xlabel("minutes of training (2-core CPU)")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def save_samples(contenders: list[Contender], folder: Path, z: torch.Tensor, real: np.ndarray) -> None:
    from PIL import Image

    from vidgan.video import sample_clips, strip

    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(strip(real, n_clips=6, n_frames=6)).save(folder / "real.png")
    for c in contenders:
        for kind, gen in c.generators.items():
            clips = sample_clips(gen, z[:6, : c.z_dim])
            name = "".join(ch if ch.isalnum() else "-" for ch in c.name).strip("-")
            Image.fromarray(strip(clips, n_clips=6, n_frames=6)).save(folder / f"{name}-{kind}.png")
            # every scored clip, for a closer look (uint8 [N, T, H, W, 3]; np.load needs no pickle)
            np.savez_compressed(folder / f"{name}-{kind}.npz", clips=sample_clips(gen, z[:, : c.z_dim]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="squares shard directory (vidgan ingest --synthetic squares)")
    p.add_argument("--variants", nargs="*", default=["gp", "zero_gp", "sn"])
    p.add_argument("--set", nargs="*", default=[], type=lambda s: tuple(s.split("=", 1)),
                   help="Variant fields for every variant, e.g. layer_norm=true")
    p.add_argument("--model", nargs="*", default=[], type=lambda s: tuple(s.split("=", 1)),
                   help="ModelConfig fields for ours, e.g. minibatch_std=0 edges=zero")
    p.add_argument("--train", nargs="*", default=[], type=lambda s: tuple(s.split("=", 1)),
                   help="TrainConfig fields for ours, e.g. critic_lr_ratio=4")
    p.add_argument("--minimal", action="store_true", help="also train the minimal WGAN-GP")
    p.add_argument("--paper-code", default=None, help="checkout of talcron/frame-prediction-pytorch")
    p.add_argument("--iterations", type=int, default=100_000)
    p.add_argument("--minutes", type=float, default=10.0, help="training time per contender (evaluations apart)")
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--fvd-every", type=int, default=0, help="0: FVD only at the start and the end")
    p.add_argument("--n-real", type=int, default=64)
    p.add_argument("--n-fake", type=int, default=64)
    p.add_argument("--bootstrap", type=int, default=100)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--z-dim", type=int, default=100)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=None, help="default: TrainConfig's")
    p.add_argument("--betas", type=float, nargs=2, default=None, help="default: TrainConfig's")
    p.add_argument("--n-critic", type=int, default=None, help="default: TrainConfig's")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-fvd", action="store_true", help="skip FVD (no I3D)")
    p.add_argument("--out", default="convergence.png")
    p.add_argument("--samples", default=None, help="folder for the last samples (PNG strips)")
    p.add_argument("--workdir", default="/tmp/vidgan-convergence")
    p.add_argument("--replot", default=None, help="redraw --out from the .json of an earlier run, training nothing")
    args = p.parse_args()
    if args.replot:
        saved = json.loads(Path(args.replot).read_text())
        kinds = lambda rows: {k.split("_", 1)[0]: None for k in rows[0] if k.endswith("_one_square")}  # noqa: E731
        old = [Contender(name, lambda: None, kinds(rows), 0, rows) for name, rows in saved["contenders"].items()]
        plot(old, Path(args.out), saved["real"]["diversity"])
        print(f"figure {args.out}")
        return
    torch.set_num_threads(args.threads)
    for k, v in args.set:
        args.set[args.set.index((k, v))] = (k, {"true": True, "false": False}.get(v.lower(), v))

    from vidgan import shards
    from vidgan.config import ModelConfig
    from vidgan.data import arrow_clip_batches
    from vidgan.squares_score import squares_score

    shard_set = shards.describe(args.data)
    model = ModelConfig(frames=shard_set.frames, size=shard_set.height, width=args.width, z_dim=args.z_dim,
                        **dict(args.model))
    real = next(iter(arrow_clip_batches(args.data, 64, shuffle=False))).permute(0, 2, 3, 4, 1).numpy()
    real_score = squares_score(real)
    print(f"data {args.data}: {shard_set.clips} clips of {model.frames}x{model.size}x{model.size}; real clips score "
          f"{real_score}; {args.threads} threads; {args.minutes:g} min of training per contender", flush=True)
    evaluator = real_feats = None
    if not args.no_fvd:
        from vidgan.fvd import FVDEvaluator, real_features

        t0 = time.perf_counter()
        real_feats = real_features(args.data, args.n_real, 16)
        evaluator = FVDEvaluator(real_feats, args.n_fake, 16, batch_size=8, seed=args.seed)
        print(f"real I3D features of {args.n_real} clips: {time.perf_counter() - t0:.0f} s", flush=True)
    z = torch.randn(64, max(args.z_dim, 100), generator=torch.Generator().manual_seed(12345))

    def stream() -> Iterator[torch.Tensor]:
        return arrow_clip_batches(args.data, args.batch, flip=True, seed=args.seed)

    contenders = [make_ours(args, name, model, stream()) for name in args.variants]
    if args.minimal:
        gan = MinimalWGANGP(model.frames, model.size, args.width, args.z_dim, args.batch, args.seed)
        batches = stream()
        contenders.append(Contender("minimal WGAN-GP", lambda: gan.train_iteration(batches),
                                    {"raw": gan.generator}, args.z_dim))
        gan.generator.z_dim = args.z_dim
    if args.paper_code:
        contenders.append(make_paper(args))
    for c in contenders:
        run(c, args, z, evaluator, real_feats, real_score.diversity)
    summary(contenders, real_score.diversity)
    out = Path(args.out)
    plot(contenders, out, real_score.diversity)
    out.with_suffix(".json").write_text(json.dumps({"args": {k: v for k, v in vars(args).items()},
                                                    "real": real_score.as_dict(),
                                                    "contenders": {c.name: c.rows for c in contenders}}, indent=1))
    print(f"figure {out}, numbers {out.with_suffix('.json')}")
    if args.samples:
        save_samples(contenders, Path(args.samples), z, real)
        print(f"samples in {args.samples}/")


if __name__ == "__main__":
    main()
