"""HTML fragments escape whatever text they are given."""

from __future__ import annotations

import pandas as pd

from widgets import markup

EVIL = "<script>alert('x')</script>&"


def test_every_fragment_escapes():
    for html in (markup.text_block(EVIL), markup.message("error", EVIL),
                 markup.badge(EVIL, "ok"), markup.messages([("warning", EVIL)])):
        assert "<script>" not in html
        assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;" in html


def test_tables_escape_cells_and_say_how_many_rows_are_left_out():
    frame = pd.DataFrame({"token": [EVIL] + ["ok"] * 5})
    html = markup.table(frame, max_rows=4)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "2 more rows" in html
