"""A self-contained HTML page of a sweep's report: the tables, the FVD curves and the sample strips, with every
image inlined (``data:image/png;base64``), so the one file can be mailed, attached or opened offline."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}
table{border-collapse:collapse;margin:1em 0;font-size:90%}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3}figure{display:inline-block;margin:0.5em;vertical-align:top}figcaption{font-size:85%}
img{image-rendering:pixelated;max-width:100%}"""


def image_tag(path: Path, alt: str, scale: int = 1) -> str:
    """An <img> with the PNG at ``path`` inlined as base64."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    width = ""
    if scale > 1:
        from PIL import Image

        with Image.open(path) as im:
            width = f' width="{im.width * scale}"'
    return f'<img alt="{html.escape(alt)}"{width} src="data:image/png;base64,{data}">'


def markdown_to_html(text: str) -> str:
    """The Markdown our tables are written in (pipe tables, paragraphs, ``**bold**``) as HTML."""
    out: list[str] = []
    table: list[list[str]] = []

    def inline(cell: str) -> str:
        parts = html.escape(cell.strip()).split("**")
        return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))

    def flush() -> None:
        if table:
            head, *body = table
            out.append("<table><tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr>")
            out.extend("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>" for row in body)
            out.append("</table>")
            table.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            cells = line.strip().strip("|").split("|")
            if not all(set(c.strip()) <= set("-:") for c in cells):  # the separator line
                table.append(cells)
            continue
        flush()
        if line.strip():
            out.append(f"<p>{inline(line)}</p>")
    flush()
    return "\n".join(out)


def page(title: str, sections: Sequence[tuple[str, str]]) -> str:
    """A whole HTML document: ``sections`` are (heading, HTML body)."""
    body = "\n".join(f"<h2>{html.escape(h)}</h2>\n{b}" for h, b in sections)
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")


def strips_html(strips: Sequence[tuple[str, Path]]) -> str:
    """Sample strips as captioned figures (as logged: already enlarged 4x)."""
    if not strips:
        return "<p>No sample strips were logged (eval.grid 0, or no evaluation yet).</p>"
    return "\n".join(f"<figure>{image_tag(p, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>"
                     for caption, p in strips)
