"""Every trial's samples at a glance on a sweep's parent run: one grid image per evaluation step, a row per trial
(its latest samples at that step), labelled with variant, seed and FVD, best first, under real clips.

MLflow shows an image key per run with a step slider, one run at a time unless full screen; the grid puts the trials
side by side in one image of the parent run. It is logged under :data:`GRID_KEY` at every evaluation step, again at
step 0 (where the MLflow UI's image cards open), and as the plain artifact :data:`GRID_FILE` (the latest), which the
parent's description links to.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from tune_jobs import history, report, tracking

if TYPE_CHECKING:
    import numpy as np

#: the parent's image key: "samples/" is a chart section of its own, and it sorts before "sweep/" (the MLflow UI
#: orders sections by name, the unprefixed "Model metrics" after them)
GRID_KEY = "samples/grid"
#: the latest grid as a plain artifact of the parent
GRID_FILE = "samples_grid.png"
ROW_HEIGHT = 176  # pixels of one trial's strip (a 4 x 4 strip of 32-pixel frames is 131 at its native size)
LABEL_WIDTH = 240
TITLE_HEIGHT = 34
GAP = 6
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)


def _font(size: int):  # noqa: ANN202 - a PIL font
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the bitmap font, one size
        return ImageFont.load_default()


def compose(rows: list[tuple[list[str], np.ndarray | None]], title: str) -> np.ndarray:
    """One image: ``title`` on top, then per row its label lines on the left and its image (scaled to
    :data:`ROW_HEIGHT`) on the right. uint8 [H, W, 3]."""
    import numpy as np
    from PIL import Image, ImageDraw

    scaled = []
    for _, image in rows:
        if image is None:
            scaled.append(None)
            continue
        picture = Image.fromarray(image)
        width = max(1, round(picture.width * ROW_HEIGHT / picture.height))
        scaled.append(picture.resize((width, ROW_HEIGHT), Image.Resampling.BOX))
    width = LABEL_WIDTH + max([s.width for s in scaled if s is not None] or [ROW_HEIGHT])
    height = TITLE_HEIGHT + len(rows) * (ROW_HEIGHT + GAP)
    canvas = Image.new("RGB", (max(width, 480), height), BACKGROUND)  # the title fits
    draw = ImageDraw.Draw(canvas)
    draw.text((8, 8), title, fill=TEXT, font=_font(18))
    small, big = _font(15), _font(17)
    for i, ((lines, _), picture) in enumerate(zip(rows, scaled, strict=True)):
        top = TITLE_HEIGHT + i * (ROW_HEIGHT + GAP)
        for j, line in enumerate(lines):
            draw.text((8, top + 6 + 24 * j), line, fill=TEXT, font=big if j == 0 else small)
        if picture is not None:
            canvas.paste(picture, (LABEL_WIDTH, top))
        else:
            draw.text((LABEL_WIDTH + 8, top + ROW_HEIGHT // 2), "no samples yet", fill=TEXT, font=small)
    return np.asarray(canvas)


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def grid_rows(rows: list[report.TrialRow], steps_of: dict[str, dict[int, str]], step: int
              ) -> list[tuple[report.TrialRow, int, float, float]]:
    """The trials shown at ``step``: (row, the step of its latest samples up to ``step``, the FVD there, its best FVD up
    to ``step``), best first; trials without samples by then are left out."""
    out = []
    for row in rows:
        seen = [s for s in steps_of.get(row.trial_id, {}) if s <= step]
        if not seen:
            continue
        at = max(seen)
        fvd = dict(row.curve).get(at, math.nan)
        best = min((f for s, f in row.curve if s <= step and f == f), default=math.nan)
        out.append((row, at, fvd, best))
    return sorted(out, key=lambda e: (math.isnan(e[3]), 0.0 if math.isnan(e[3]) else e[3], e[0].variant, e[0].seed))


def log_grids(uri: str, parent_run_id: str, rows: list[report.TrialRow], run_ids: dict[str, str],
              folder: Path) -> int:
    """Log the grids of a sweep's trials to its parent run (see the module's docstring); downloads go to ``folder``.
    Returns how many evaluation steps got one (0: no trial logged samples)."""
    import numpy as np
    from mlflow import MlflowClient
    from PIL import Image

    client = MlflowClient(uri)
    steps_of = {r.trial_id: history.sample_images(client, run_ids[r.trial_id]) for r in rows if r.trial_id in run_ids}
    steps = sorted({s for images in steps_of.values() for s in images})
    if not steps:
        return 0
    cache: dict[tuple[str, str], np.ndarray] = {}

    def load(run_id: str, path: str) -> np.ndarray:
        if (run_id, path) not in cache:
            target = folder / run_id
            target.mkdir(parents=True, exist_ok=True)
            local = client.download_artifacts(run_id, path, str(target))
            cache[run_id, path] = np.asarray(Image.open(local).convert("RGB"))
        return cache[run_id, path]

    real = history.sample_images(client, parent_run_id).get(0)
    datasets = len({r.dataset for r in rows}) > 1
    parent = tracking.Tracker(uri, parent_run_id)
    grid = None
    for step in steps:
        lines: list[tuple[list[str], np.ndarray | None]] = []
        if real is not None:
            lines.append((["real clips", "(the dataset)"], load(parent_run_id, real)))
        for rank, (row, at, fvd, best) in enumerate(grid_rows(rows, steps_of, step), 1):
            label = [f"{rank}. {row.variant}, seed {row.seed}", f"FVD {_fmt(fvd)} at iteration {at}",
                     f"best FVD {_fmt(best)} so far"]
            if datasets:
                label.insert(1, row.dataset)
            lines.append((label, load(run_ids[row.trial_id], steps_of[row.trial_id][at])))
        grid = compose(lines, f"Every trial's latest samples at iteration {step}, best FVD first")
        parent.log_image(grid, key=GRID_KEY, step=step)
    parent.log_image(grid, key=GRID_KEY, step=0)  # where MLflow's image cards open: the latest
    path = folder / GRID_FILE
    Image.fromarray(grid).save(path)
    parent.log_artifact(path)
    return len(steps)


def with_grid(ctx: tracking.SweepContext, rows: list[report.TrialRow], description: str) -> str:
    """At the end of a sweep: log the grids (:func:`log_grids`) to its parent run and return the parent's description
    with a link to the latest grid beside its first links; on failure a warning and the description as it was."""
    import logging
    import tempfile

    try:
        run_ids = {k: r.info.run_id for k, r in tracking.trial_runs(ctx.tracking_uri, ctx.experiment_id,
                                                                     ctx.parent_run_id).items() if k}
        with tempfile.TemporaryDirectory(prefix="vidgan-grid-") as tmp:
            logged = log_grids(ctx.tracking_uri, ctx.parent_run_id, rows, run_ids, Path(tmp))
    except Exception as exc:  # noqa: BLE001 - pictures are worth a warning, not a failed sweep
        logging.getLogger(__name__).warning("the trials' samples grid was not logged to the parent run: %s", exc)
        return description
    if not logged:
        return description
    link = tracking.artifact_url(ctx.experiment_id, ctx.parent_run_id, GRID_FILE)
    first, newline, rest = description.partition("\n")
    return f"{first} | [Every trial's samples, best first]({link}){newline}{rest}"
