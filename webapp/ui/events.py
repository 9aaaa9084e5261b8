"""What every event handler shares: services' `UserError`s become messages on the page."""

from __future__ import annotations

import functools
from collections.abc import Callable

import gradio as gr

from webapp.services import UserError


def shown(handler: Callable) -> Callable:
    """Runs an event handler, turning a `UserError` into a message on the page (`gr.Error`)."""

    @functools.wraps(handler)
    def run(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except UserError as exc:
            raise gr.Error(str(exc)) from None

    return run
