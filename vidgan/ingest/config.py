"""IngestConfig: the parameters of one ingest (clip shape, sampling, shard size, safety caps)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Parameters that fix the content of the clips. A shard directory is written with one set of them;
#: resuming into a directory written with other values is refused.
CONTENT_KEYS = ("frames", "size", "stride", "fps", "synthetic")


class SyntheticSpec(BaseModel):
    """A synthetic dataset made instead of read: ``clips`` clips of ``kind`` (``squares``: :mod:`vidgan.synthetic`)
    drawn from ``seed``. One shard directory holds one such dataset (these values are content parameters)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["squares"] = "squares"
    clips: int = Field(2048, ge=1, le=10_000_000)
    seed: int = Field(0, ge=0)


class IngestConfig(BaseModel):
    """How videos become clips and clips become shards.

    ``frames`` x ``size`` x ``size`` clips, one every ``stride`` frames (default: ``frames``, i.e.
    non-overlapping), at the source rate or resampled to ``fps``. Shards hold about ``shard_mb`` MiB of
    clips in row groups of ``row_group_clips`` clips. ``max_pixels`` and ``max_frames`` cap what one
    source may decode, so a hostile file cannot exhaust memory. ``parallel`` picks in-process decoding
    or Ray tasks (``auto``: Ray tasks when a Ray cluster with more than one CPU is available and there
    are at least ``ray_min_sources`` sources).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    frames: int = Field(32, ge=1, le=1024)
    size: int = Field(64, ge=8, le=1024)
    stride: int | None = Field(None, ge=1)
    fps: float | None = Field(None, gt=0, le=1000)
    shard_mb: float = Field(128.0, gt=0)
    row_group_clips: int = Field(64, ge=1)
    # lz4 measured best for streaming raw uint8 clips (benchmarks/data_stream.py --codecs): ratio 1.18,
    # ~3x faster to read than zstd-1 (ratio 1.39), which alone could not feed 1,500 clips/s per core.
    compression: Literal["lz4", "zstd", "snappy", "gzip", "brotli", "none"] = "lz4"
    compression_level: int | None = None
    max_pixels: int = Field(4096 * 2304, ge=1)
    max_frames: int = Field(20_000, ge=1)
    parallel: Literal["auto", "local", "ray"] = "auto"
    ray_min_sources: int = Field(16, ge=1)
    synthetic: SyntheticSpec | None = None  # also make this synthetic dataset (no files read for it)

    @model_validator(mode="after")
    def _check(self) -> IngestConfig:
        if self.max_frames < self.frames:
            raise ValueError(f"max_frames ({self.max_frames}) is smaller than one clip ({self.frames} frames)")
        return self

    @property
    def clip_stride(self) -> int:
        """Frames between the starts of consecutive clips of one source."""
        return self.stride or self.frames

    def content_params(self) -> dict[str, float | int | None]:
        """The parameters that must match when resuming into an existing shard directory."""
        synthetic = self.synthetic.model_dump() if self.synthetic else None
        return {"frames": self.frames, "size": self.size, "stride": self.clip_stride, "fps": self.fps,
                "synthetic": synthetic}
