"""A table as cards, for a phone: one card a row, its first column as the card's title and every
other column as a `label  value` line. Explore shows its wide tables this way below 640 px
(`demo.ui.layout.CSS` swaps the two), so a phone reads every number without sideways scrolling."""

from __future__ import annotations

from html import escape

import pandas as pd


def table_cards(table: pd.DataFrame, label: str) -> str:
    """HTML of `table` (rows × columns of display strings) as one `<dl>` card a row, under `label`.
    Empty cells (the total row's flow and kind) are left out of their card."""
    columns = [escape(str(c)) for c in table.columns]
    cards = []
    for row in table.itertuples(index=False):
        title, *rest = [escape(str(v)) for v in row]
        lines = "".join(f'<div><dt>{c}</dt><dd>{v}</dd></div>' for c, v in zip(columns[1:], rest) if v)
        cards.append(f'<dl class="table-card"><div class="table-card-title"><dt>{columns[0]}</dt>'
                     f'<dd>{title}</dd></div>{lines}</dl>')
    return (f'<div class="table-cards">'
            f'<p class="table-cards-label">{escape(label)}</p>{"".join(cards)}</div>')
