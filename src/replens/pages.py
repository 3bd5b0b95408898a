"""The one HTML page writer: every offline page of replens (the audit report, FALCON's report) is built here.

A page is self-contained: inline CSS, no scripts, nothing loaded from the
network; the caller escapes its body's text and references images by relative
path. Files are written atomically (``replens.runs.atomic_write_text``)::

    from replens.pages import write_html_page

    write_html_page("run/report.html", "FALCON explanations", "<h1>...</h1>\\n", style="body{margin:24px}")
"""

from __future__ import annotations

import html
from pathlib import Path

from replens.runs import atomic_write_text

__all__ = ["html_page", "write_html_page"]


def html_page(title: str, body: str, *, style: str = "") -> str:
    """The text of an HTML5 page.

    Args:
        title: The ``<title>`` (escaped here).
        body: Markup placed inside ``<body>`` as given (end it with a newline).
        style: CSS placed in the head's ``<style>``.
    """
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(str(title), quote=True)}</title>\n<style>{style}</style>\n</head>\n<body>\n"
        f"{body}</body>\n</html>\n"
    )


def write_html_page(path: str | Path, title: str, body: str, *, style: str = "") -> Path:
    """Write :func:`html_page` to ``path`` atomically and return the path."""
    return atomic_write_text(Path(path), html_page(title, body, style=style))
