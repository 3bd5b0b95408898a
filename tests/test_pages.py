"""The one HTML page writer: both offline pages of replens are built by it."""

from __future__ import annotations

from pathlib import Path

from replens.pages import html_page, write_html_page
from replens.report import render_html


def test_page_escapes_the_title_and_keeps_the_body(tmp_path: Path):
    page = html_page('a <b> & "c"', "<p>x</p>\n", style="p{margin:0}")
    assert page.startswith("<!DOCTYPE html>\n") and page.endswith("<p>x</p>\n</body>\n</html>\n")
    assert "<title>a &lt;b&gt; &amp; &quot;c&quot;</title>" in page and "<style>p{margin:0}</style>" in page
    path = write_html_page(tmp_path / "sub" / "p.html", "t", "<p>y</p>\n")
    assert path.read_text(encoding="utf-8") == html_page("t", "<p>y</p>\n")
    assert not [p for p in path.parent.iterdir() if p.name != "p.html"]  # no staging file left


def test_the_audit_report_is_a_page_of_the_one_writer(tmp_path: Path):
    page = render_html({"title": "t <1>", "overview": {"encoder": "e"}}, tmp_path)
    head, _, _ = page.partition("<header>")
    assert head == html_page("t <1>", "", style=head.split("<style>")[1].split("</style>")[0]).split("</body>")[0]
