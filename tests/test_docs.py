"""The documentation: the MkDocs site under docs/ builds in strict mode, and README.md stays a front door.

`mkdocs build --strict` (mkdocs.yml's `validation:` makes a broken link, a link to a file outside docs/, a missing
anchor and a page left out of the nav warnings, which strict mode turns into errors) runs here, so `make test`
and CI fail on them. README.md is rendered by GitHub, not by MkDocs: its relative links (to docs pages, their
anchors, images) are checked here against the files and the built site.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
README_MAX_LINES = 200
# [text](target) and ![alt](target); the target ends at whitespace or the closing parenthesis
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        cwd=config.parent, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    build = _mkdocs_build(REPO / "mkdocs.yml", out)
    assert build.returncode == 0, f"mkdocs build --strict failed:\n{build.stdout[-4000:]}\n{build.stderr[-4000:]}"
    return out


def test_docs_site_builds_strict(site: Path) -> None:
    assert (site / "index.html").is_file()
    assert (site / "quickstart" / "index.html").is_file()


def test_strict_build_fails_on_a_broken_link_a_missing_anchor_and_a_page_left_out(tmp_path: Path) -> None:
    """The repository's validation settings, on a scratch site: each fault alone fails the build (and the site
    without a fault builds, so that the failures are the faults')."""
    config = (REPO / "mkdocs.yml").read_text()
    settings = config[config.index("\nvalidation:"):]
    faults = {
        "no fault": ("[x](other.md#a-heading)", False),
        "broken link": ("[x](missing.md)", False),
        "missing anchor": ("[x](other.md#no-such-heading)", False),
        "link outside docs": ("[x](../README.md)", False),
        "page not in nav": ("fine", True),
    }
    for name, (index_text, orphan) in faults.items():
        root = tmp_path / name.replace(" ", "-")
        (root / "docs").mkdir(parents=True)
        (root / "docs" / "index.md").write_text(f"# Home\n\n{index_text}\n")
        (root / "docs" / "other.md").write_text("# Other\n\n## A heading\n")
        if orphan:
            (root / "docs" / "orphan.md").write_text("# Orphan\n")
        (root / "README.md").write_text("# x\n")
        (root / "mkdocs.yml").write_text(
            "site_name: t\ndocs_dir: docs\nstrict: true\ntheme:\n  name: mkdocs\n"
            "nav:\n  - index.md\n  - other.md\n" + settings
        )
        build = _mkdocs_build(root / "mkdocs.yml", root / "site")
        if name == "no fault":
            assert build.returncode == 0, build.stderr[-2000:]
        else:
            assert build.returncode != 0, f"{name}: the strict build passed\n{build.stderr[-2000:]}"


def test_readme_is_a_front_door() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md: {len(lines)} lines, over {README_MAX_LINES}; move text to docs/"
    text = "\n".join(lines)
    assert "make demo" in text and "make test" in text


def _anchors(html: str) -> set[str]:
    return set(re.findall(r'\bid="([^"]+)"', html))


def test_readme_relative_links_point_to_files_that_exist(site: Path) -> None:
    targets = LINK.findall(README.read_text())
    relative = [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]
    assert relative, "no relative links found in README.md"
    broken = []
    for target in relative:
        path, _, anchor = target.partition("#")
        file = (REPO / path).resolve()
        if not file.exists():
            broken.append(f"{target}: no such file")
            continue
        if anchor and file.suffix == ".md" and file.is_relative_to(REPO / "docs"):
            page = file.relative_to(REPO / "docs").with_suffix("")  # docs/a/b.md -> site/a/b/index.html
            html = site / (page.parent if page.name == "index" else page) / "index.html"
            if anchor not in _anchors(html.read_text()):
                broken.append(f"{target}: no heading with anchor #{anchor}")
    assert not broken, "README.md links to what does not exist:\n" + "\n".join(broken)
