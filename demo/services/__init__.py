"""What the tabs do, without Gradio: plain classes the UI calls and tests drive directly.

Every service raises `UserError` for anything a visitor can fix or should be told; the UI turns
it into a message on the page (`gr.Error`). Its text never holds a server path or a traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """A failure to show the visitor as it is."""
