"""The fonts the page, its figures and the Netron frame use, all served by the app itself (no font
is fetched from anywhere else).

- The page's text: Source Sans Pro and IBM Plex Mono as Gradio serves them (`static/fonts/`), under
  families of our own. Gradio's default theme asks for their weight 600 from files that are stubs
  (SourceSansPro-SemiBold.woff2 holds " AB" and some Cyrillic), so bold text mixed Source Sans
  capitals with a system font's other letters; our families take the full Bold files for 600–900.
- Every glyph those lack (⋯, ①–④, ⌘, Netron's 〈 〉…): `assets/fonts/fallback.woff2`, a renamed
  DejaVu Sans subset (`assets/fonts/make_fallback.py`, licence beside it), at `/fonts/`.
"""

from __future__ import annotations

from pathlib import Path

import fastapi
from fastapi.responses import FileResponse, Response

FONTS_DIR = Path(__file__).resolve().parents[1] / "assets" / "fonts"
FONT_FILES = {"fallback.woff2": "font/woff2"}  # what /fonts/ serves, and nothing else
FALLBACK = "Xception Explorer Fallback"
SANS_FAMILY = "Xception Explorer Sans"
MONO_FAMILY = "Xception Explorer Mono"
SANS = f'"{SANS_FAMILY}", "{FALLBACK}", ui-sans-serif, system-ui, sans-serif'
MONO = f'"{MONO_FAMILY}", "{FALLBACK}", ui-monospace, Consolas, monospace'
_CACHE = "public, max-age=86400"


def fallback_face(fonts_url: str = "fonts") -> str:
    """The @font-face of the fallback; `fonts_url` is the /fonts/ route relative to the page."""
    return (f'@font-face {{ font-family: "{FALLBACK}"; font-style: normal; font-weight: 100 900; '
            f'src: url("{fonts_url}/fallback.woff2") format("woff2"); }}')


def page_font_css(static_url: str = "static/fonts", fonts_url: str = "fonts") -> str:
    """@font-face rules of the page's families (URLs relative to the page), and the theme's
    `--font` / `--font-mono` pointed at them."""
    def face(family: str, file: str, weights: str) -> str:
        return (f'@font-face {{ font-family: "{family}"; font-style: normal; font-weight: {weights}; '
                f'font-display: swap; src: url("{static_url}/{file}") format("woff2"); }}')

    return "\n".join([
        face(SANS_FAMILY, "SourceSansPro/SourceSansPro-Regular.woff2", "100 500"),
        face(SANS_FAMILY, "SourceSansPro/SourceSansPro-Bold.woff2", "600 900"),
        face(MONO_FAMILY, "IBMPlexMono/IBMPlexMono-Regular.woff2", "100 500"),
        face(MONO_FAMILY, "IBMPlexMono/IBMPlexMono-Bold.woff2", "600 900"),
        fallback_face(fonts_url),
        # html:root outranks the theme's :root, wherever the two style sheets land in the page.
        f"html:root, html:root .dark {{ --font: {SANS}; --font-mono: {MONO}; }}",
    ])


def add_font_routes(app: fastapi.FastAPI, prefix: str = "/fonts") -> None:
    """`GET /fonts/{name}`: the allowlisted font files (register before Gradio is mounted at /)."""

    @app.get(prefix + "/{name}", include_in_schema=False)
    def font(name: str) -> Response:
        media_type = FONT_FILES.get(name)
        if media_type is None:
            return Response(status_code=404)
        return FileResponse(FONTS_DIR / name, media_type=media_type, headers={"Cache-Control": _CACHE})
