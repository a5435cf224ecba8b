"""Source kinds of `vidgan ingest` plug in: the registry finds the built-in kinds (video, tinyvideo) in
vidgan/ingest/kinds/ and a package's through the entry point group ``vidgan.ingest_sources``; a kind added that
way is ingested like the built-in ones, and two kinds claiming one extension are refused."""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from vidgan.ingest import kinds

#: a kind a package could add: .npy arrays of frames [N, H, W, 3] uint8, already at the clip size
NPY_KIND = '''"""NumPy frames: an array [N, H, W, 3] uint8 in a .npy file, one clip every `stride` frames."""
import numpy as np
from vidgan.ingest.decode import Clipper, too_short
EXTENSIONS = frozenset({".npy"})

def decode(src, cfg, out):
    frames = np.load(src.path)
    if frames.ndim != 4 or frames.shape[1:] != (cfg.size, cfg.size, 3):
        out.error = f"frames of shape {frames.shape[1:]}, not ({cfg.size}, {cfg.size}, 3)"
        return
    clipper = Clipper(cfg.frames, cfg.clip_stride)
    for frame in frames[: cfg.max_frames]:
        clipper.add(frame)
    out.frames_read = len(frames)
    if not clipper.clips:
        out.error = too_short(len(frames), cfg)
        return
    out.clips, out.starts = np.stack(clipper.clips), clipper.starts
'''


def test_the_built_in_kinds_and_their_extensions() -> None:
    assert list(kinds.registry()) == ["squares", "tinyvideo", "video"]  # squares: made, claims no file suffix
    assert kinds.kind_of("a/b.MP4") == "video" and kinds.kind_of("x.jpeg") == "tinyvideo"
    assert kinds.kind_of("notes.txt") is None and ".webm" in kinds.extensions()


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Register ``module`` (source text) as kind ``name`` through an entry point, as an installed package would."""
    real = metadata.entry_points

    def register(name: str, module: str, text: str) -> None:
        (tmp_path / f"{module}.py").write_text(text)
        monkeypatch.syspath_prepend(str(tmp_path))
        point = metadata.EntryPoint(name=name, value=module, group=kinds.ENTRY_POINT_GROUP)
        monkeypatch.setattr(metadata, "entry_points",
                            lambda **kw: [point] if kw.get("group") == kinds.ENTRY_POINT_GROUP else real(**kw))
        kinds.registry.cache_clear()

    yield register
    kinds.registry.cache_clear()
    for module in ("npy_kind_plugin", "jpeg_again_plugin"):
        sys.modules.pop(module, None)


def test_an_entry_point_kind_is_ingested(plugin, tmp_path: Path) -> None:
    from vidgan import shards
    from vidgan.ingest import IngestConfig, ingest

    plugin("npy", "npy_kind_plugin", NPY_KIND)
    folder = tmp_path / "src"
    folder.mkdir()
    frames = np.random.default_rng(0).integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)
    np.save(folder / "walk.npy", frames)
    np.save(folder / "tiny.npy", frames[:3])
    manifest = ingest([str(folder)], tmp_path / "out", IngestConfig(frames=8, size=16, stride=4, parallel="local"))
    assert manifest["sources"]["walk.npy"]["clips"] == 4  # starts 0, 4, 8, 12
    assert manifest["sources"]["tiny.npy"]["status"] == "skipped"
    assert "too short" in manifest["sources"]["tiny.npy"]["reason"]
    clips = np.concatenate(list(shards.iter_clips(str(tmp_path / "out"))))
    assert clips.shape == (4, 8, 16, 16, 3) and np.array_equal(clips[1], frames[4:12])
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["totals"]["clips"] == 4


def test_an_extension_claimed_twice_leaves_the_plugin_out(plugin, capsys) -> None:
    """A plug-in claiming a built-in kind's extension costs its own name only (#30 item 7): warned, left out."""
    plugin("jpeg_again", "jpeg_again_plugin", 'EXTENSIONS = frozenset({".jpg"})\ndef decode(src, cfg, out): pass\n')
    assert "jpeg_again" not in kinds.registry() and kinds.kind_of("a.jpg") == "tinyvideo"
    assert "claims .jpg, which source kind 'tinyvideo' decodes" in capsys.readouterr().err
