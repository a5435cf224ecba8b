"""What a trial calls: score a generator against cached real features with FVD and KVD."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .distance import frechet_distance, frechet_distance_bootstrap, kvd
from .features import extract_features, load_i3d
from .i3d import I3D, check_frames


class FVDEvaluator:
    """Generate ``n_fake`` clips from fixed seeded latents, extract I3D features, compare with ``real_feats``.

    The generator maps ``z [B, z_dim] ~ N(0, I)`` to float video ``[B, 3, T, H, W]`` in [-1, 1]. Only the first
    ``frames`` frames are scored (``T < frames`` is an error). The latents come from a CPU
    ``torch.Generator`` seeded with ``seed``, so successive evaluations of one trial (and of different trials)
    see the same z and are comparable. The I3D is loaded on first use, on ``device``; at most ``batch_size``
    clips are generated and scored at once, which bounds GPU memory. With ``n_boot > 0`` :meth:`evaluate`
    adds a 95% bootstrap interval of the FVD (``n_boot`` resamples of the features already in hand, seeded).
    """

    def __init__(
        self,
        real_feats: np.ndarray,
        n_fake: int,
        frames: int,
        device: str | torch.device = "cpu",
        batch_size: int = 8,
        seed: int = 0,
        weights_path: str | None = None,
        n_boot: int = 0,
    ) -> None:
        real = np.asarray(real_feats, dtype=np.float64)
        if real.ndim != 2 or real.shape[0] < 2:
            raise ValueError(f"real_feats must be [N >= 2, 400], got {real.shape}")
        if n_fake < 2:
            raise ValueError(f"n_fake must be >= 2, got {n_fake}")
        check_frames(frames)
        self.real_feats = real
        self.n_fake = n_fake
        self.frames = frames
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.seed = seed
        self.weights_path = weights_path
        self.n_boot = n_boot
        self._model: I3D | None = None
        self._z: torch.Tensor | None = None

    @property
    def model(self) -> I3D:
        if self._model is None:
            self._model = load_i3d(self.device, self.weights_path)
        return self._model

    def latents(self, z_dim: int) -> torch.Tensor:
        """The fixed evaluation latents ``[n_fake, z_dim]`` (CPU)."""
        if self._z is None or self._z.shape[1] != z_dim:
            g = torch.Generator(device="cpu").manual_seed(self.seed)
            self._z = torch.randn(self.n_fake, z_dim, generator=g)
        return self._z

    def fake_features(self, generator: nn.Module) -> np.ndarray:
        """I3D features ``[n_fake, 400]`` of the generator's clips; the generator's train/eval mode is restored."""
        z_all = self.latents(int(generator.z_dim))
        try:
            gen_device = next(generator.parameters()).device
        except StopIteration:
            gen_device = self.device
        was_training = generator.training
        generator.eval()
        try:
            with torch.inference_mode():

                def batches():
                    b = self.batch_size
                    for i in range(0, self.n_fake, b):
                        # iVGAN's generator normalises with batch statistics: every batch holds b clips, the
                        # last one the last b latents (kept: those not scored yet), not a smaller remainder
                        start = max(0, min(i, self.n_fake - b))
                        video = generator(z_all[start : start + b].to(gen_device))[i - start :]
                        if video.ndim != 5 or video.shape[1] != 3:
                            raise ValueError(f"generator must return [B, 3, T, H, W], got {tuple(video.shape)}")
                        if video.shape[2] < self.frames:
                            raise ValueError(
                                f"generator makes {video.shape[2]} frames, fewer than the {self.frames} scored"
                            )
                        yield video[:, :, : self.frames]

                return extract_features(self.model, batches(), self.batch_size)
        finally:
            generator.train(was_training)

    def evaluate(self, generator: nn.Module) -> dict[str, float | int]:
        """``{"fvd", "kvd", "kvd_stderr", "n"}`` with ``n`` the number of generated clips scored, and
        ``fvd_ci_low``/``fvd_ci_high`` (95% bootstrap interval) when ``n_boot > 0``."""
        fake = self.fake_features(generator)
        value, stderr = kvd(self.real_feats, fake)
        out: dict[str, float | int] = {
            "fvd": frechet_distance(self.real_feats, fake),
            "kvd": value,
            "kvd_stderr": stderr,
            "n": int(len(fake)),
        }
        if self.n_boot > 0:
            out["fvd_ci_low"], out["fvd_ci_high"] = frechet_distance_bootstrap(
                self.real_feats, fake, n_boot=self.n_boot, seed=self.seed
            )
        return out

    def fvd(self, generator: nn.Module) -> float:
        """The FVD alone (one I3D pass over the generated clips, no KVD, no interval)."""
        return frechet_distance(self.real_feats, self.fake_features(generator))
