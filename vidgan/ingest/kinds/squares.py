"""Synthetic squares (:mod:`vidgan.synthetic`): made, not read. Its sources come from ``vidgan ingest --synthetic
squares`` (:func:`vidgan.ingest.sources.synthetic_sources`), never from a file, so it claims no file suffix."""

from __future__ import annotations

EXTENSIONS: frozenset[str] = frozenset()
#: made from the source's path (seed, chunk, clips), not read from a file
SYNTHETIC = True


def decode(src, cfg, out) -> None:  # noqa: ANN001 - the kind interface (vidgan.ingest.kinds)
    """Chunk ``chunk`` of seed ``seed``: :func:`vidgan.synthetic.squares_clips` of ``clips`` clips, seed
    ``seed * 1_000_003 + chunk``, at ``cfg.frames`` x ``cfg.size`` x ``cfg.size``."""
    from vidgan.synthetic import squares_clips

    from ..sources import synthetic_params

    p = synthetic_params(src)
    clips = squares_clips(p["clips"], cfg.frames, cfg.size, p["seed"] * 1_000_003 + p["chunk"])
    out.clips = clips.permute(0, 2, 3, 4, 1).contiguous().numpy()  # [N, T, H, W, 3]
    out.starts = [0] * p["clips"]
    out.frames_read = cfg.frames * p["clips"]
    out.fps = 0.0
