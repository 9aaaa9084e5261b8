"""Builds `fallback.woff2`: the glyphs the page and Netron use that Source Sans Pro (the page's
font, served by Gradio) lacks, and the symbol ranges a page about networks is likely to show,
cut from DejaVu Sans (free licence: `LICENSE-DejaVu.txt` beside this file).

Netron writes tensor shapes between CJK angle brackets (U+3008, U+3009), which DejaVu lacks and a
machine without CJK fonts draws as boxes: they are mapped to DejaVu's mathematical angle brackets
(U+27E8, U+27E9), which look the same.

Run once after the page starts using new symbols (the browser tests fail when a glyph is drawn by
a system font), from the repository root:

    pip install fonttools brotli && python assets/fonts/make_fallback.py [path/to/DejaVuSans.ttf]

DejaVu Sans comes with Debian's `fonts-dejavu-core` (/usr/share/fonts/truetype/dejavu/) and with
matplotlib (mpl-data/fonts/ttf/).
"""

from __future__ import annotations

import sys
from pathlib import Path

from fontTools import subset
from fontTools.ttLib import TTFont

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SOURCE = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
OUT = HERE / "fallback.woff2"
FAMILY = "Xception Explorer Fallback"

# Beyond the characters the app's text uses: what a page about networks may show next (Latin and
# Cyrillic are the page font's own; Netron's frame falls back to the system's for those).
RANGES = [
    (0x0370, 0x03FF),  # Greek
    (0x2000, 0x206F), (0x2070, 0x209F),  # punctuation, super- and subscripts
    (0x2190, 0x21FF), (0x2200, 0x22FF), (0x2300, 0x23FF),  # arrows, mathematical operators, technical (⌘ ⋯)
    (0x2460, 0x2473),  # circled numbers (① ② ③ ④)
    (0x25A0, 0x25FF),  # geometric shapes
    (0x27E6, 0x27EB),  # mathematical brackets (⟨ ⟩)
]
ALIASES = {0x3008: 0x27E8, 0x3009: 0x27E9}  # Netron's 〈 〉 drawn with ⟨ ⟩


def used_characters() -> set[int]:
    """Every character of the app's own text: page text, labels, the architecture's notes."""
    files = [*ROOT.glob("demo/**/*.py"), *ROOT.glob("xception_core/arch/*.py"), *ROOT.glob("assets/*.json")]
    return {ord(c) for f in files for c in f.read_text(encoding="utf-8") if ord(c) > 0x7E}


def main(source: Path = SOURCE) -> None:
    font = TTFont(source)
    have = set(font.getBestCmap())
    wanted = {c for lo, hi in RANGES for c in range(lo, hi + 1)} | used_characters()
    options = subset.Options()
    options.flavor = "woff2"
    options.layout_features = ["kern", "liga"]
    options.name_IDs = ["*"]
    options.notdef_outline = True
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=sorted(wanted & have))
    subsetter.subset(font)
    for table in font["cmap"].tables:  # the aliases point at the glyphs kept above
        if table.isUnicode():
            for alias, target in ALIASES.items():
                if target in table.cmap:
                    table.cmap[alias] = table.cmap[target]
    for record in font["name"].names:  # a renamed subset (the licence asks that modified copies be renamed)
        if record.nameID in (1, 4, 16):
            record.string = FAMILY
        elif record.nameID == 6:
            record.string = FAMILY.replace(" ", "")
    font.flavor = "woff2"
    font.save(OUT)
    missing = sorted(c for c in used_characters() if c not in font.getBestCmap())
    print(f"{OUT.name}: {OUT.stat().st_size:,} bytes, {len(font.getBestCmap())} characters; "
          f"used but in no font here: {''.join(map(chr, missing)) or 'none'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else SOURCE)
