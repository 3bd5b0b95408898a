"""Fixtures shared by every test package."""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Every test workload is tiny: one intra-op thread avoids OpenMP contention on a small busy machine,
    where two threads run 5-10x slower than one (restored after the session)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def seeded_random_state() -> None:
    """Every test starts from the same global random state (torch, numpy, random), so a test that draws
    without its own generator is still deterministic and the suite gives the same result on every run."""
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)


def _launch_chromium(p: Any) -> Any:
    """The system Chromium when on PATH (how CI runs), else Playwright's own build (``playwright install``)."""
    system = shutil.which("chromium") or shutil.which("chromium-browser")
    if system:
        return p.chromium.launch(executable_path=system, args=["--no-sandbox"])
    try:
        return p.chromium.launch(args=["--no-sandbox"])
    except Exception as exc:  # Playwright's own message is many lines: name the fix in one
        raise AssertionError(
            "no headless browser: run `make browser` (scripts/ensure_browser.sh installs Debian's chromium "
            "or Playwright's)"
        ) from exc


def _open_in_chromium(index: Path, screenshot: Path) -> dict[str, Any]:
    """Load ``index`` in headless Chromium (driven by Playwright; see :func:`_launch_chromium`).

    Returns the console errors, page errors and failed requests (``errors``), every
    requested URL, each ``<img>``'s ``src`` / ``naturalWidth`` / ``complete``, the
    section ids, and writes a full-page screenshot to ``screenshot``.
    """
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = _launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url} {r.failure}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(index.as_uri(), wait_until="load")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => ({src: e.getAttribute('src'), w: e.naturalWidth, done: e.complete}))"
            )
            sections = page.eval_on_selector_all("section", "els => els.map(e => e.id)")
            details_open = page.eval_on_selector("details", "e => e.open")
            shot = page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return {"errors": errors, "requests": requests, "images": images, "sections": sections,
            "details_open": details_open, "screenshot": shot}


@pytest.fixture(scope="session")
def open_in_chromium() -> Callable[[Path, Path], dict[str, Any]]:
    """``open_in_chromium(index_html, screenshot_png) -> dict`` (see :func:`_open_in_chromium`)."""
    return _open_in_chromium
