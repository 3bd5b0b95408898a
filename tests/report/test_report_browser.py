"""The audit report in a real browser: headless Chromium (the system's, driven by Playwright) loads index.html
offline with no console error, no page error, no failed request, and every image decoded."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from replens.report import SECTIONS, write_report


def test_report_loads_cleanly_in_chromium(
    tmp_path: Path, summary_factory: Callable[[Path], dict[str, Any]], open_in_chromium: Callable[..., dict[str, Any]]
) -> None:
    folder = tmp_path / "report"
    index = write_report(summary_factory(folder), folder)
    page = open_in_chromium(index, tmp_path / "report.png")

    assert page["errors"] == []
    assert all(url.startswith("file://") for url in page["requests"]), page["requests"]  # nothing from the network
    assert len(page["images"]) == 5 + 5 + 3 * (4 + 2)  # figures, failures, group crops and lowly activating images
    for image in page["images"]:
        assert image["done"] and image["w"] > 0, image
    assert page["sections"] == list(SECTIONS)
    assert page["details_open"] is False  # configuration collapsed
    shot = page["screenshot"]
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "report.png").stat().st_size > 10_000
    if os.environ.get("REPLENS_SCREENSHOT"):
        target = Path(os.environ["REPLENS_SCREENSHOT"])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(shot)
