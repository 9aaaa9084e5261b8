"""What a client may be told about a failure: no server paths, no raw Python text, bounded length.

Every message that leaves the server (an event's error, the status line, `/healthz`) goes through
`public_text`. Messages from the core name files by their full path, which is right for a
developer at a console and wrong for a stranger on a public page.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from xception_core.weights.fetch import WeightsFailure, WeightsUnavailableError

MAX_MESSAGE = 600  # characters of one message shown to a client
MAX_ECHO = 40  # characters of a client's own string echoed back in a message

# An absolute or home-relative path: a '/' not preceded by a word character, a colon or another
# '/' (so URLs such as https://host/x and fractions such as 3/4 are left alone), then path
# characters. It is replaced by its last component, which is what a visitor may recognise.
_PATH = re.compile(r"(?<![\w:/.~])(?:~)?(?:/[^\s'\"`()\[\]{}<>,;|]+)+")


def _last_part(match: re.Match) -> str:
    parts = [p for p in match.group(0).split("/") if p and p != "~"]
    return parts[-1] if parts else "…"


def scrub_paths(text: str) -> str:
    """`text` with every absolute path replaced by its last component ('/root/.cache/x/m.keras' → 'm.keras')."""
    return _PATH.sub(_last_part, text)


def public_text(text: object, limit: int = MAX_MESSAGE) -> str:
    """A message fit for a client: paths scrubbed, cut to `limit` characters."""
    out = scrub_paths(str(text))
    return out if len(out) <= limit else out[: limit - 1] + "…"


def echo(value: object, limit: int = MAX_ECHO) -> str:
    """A client's value quoted for a message, cut to `limit` characters."""
    text = value if isinstance(value, str) else repr(value)
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return repr(text)


_OUR_KINDS = ("WeightsUnavailableError", "ValueError", "UserError")


@dataclass(frozen=True)
class LoadFailure:
    """Why weights failed to load, for code to read (the page picks its words by it).

    Attributes:
        cause: What the core said went wrong (`WeightsFailure.UNKNOWN` for any other error).
        kind: The exception's class name when it is not one of ours (a `BadZipFile` says more
            than its text), else ''.
    """

    cause: WeightsFailure
    kind: str = ""


def load_failure(exc: BaseException) -> LoadFailure:
    """The `LoadFailure` of an exception raised while loading weights."""
    cause = exc.cause if isinstance(exc, WeightsUnavailableError) else WeightsFailure.UNKNOWN
    kind = type(exc).__name__
    return LoadFailure(cause, "" if kind in _OUR_KINDS else kind)


def failure_reason(exc: BaseException) -> str:
    """Why loading failed, as a message fit for a client and the logs: the message, scrubbed, and
    the exception's kind when it is not one of ours."""
    message = public_text(exc, 300)
    kind = type(exc).__name__
    if kind in _OUR_KINDS or not message:
        return message or kind
    return f"{kind}: {message}"


# A web address (scheme://…), and an OS error's code ("[Errno -2] "): neither helps a client.
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"`<>()\[\]{}]+")
_ERRNO = re.compile(r"\[(?:Errno|WinError) -?\d+\]\s*")


def without_addresses(text: str) -> str:
    """`text` with web addresses replaced by "a web address" and errno codes dropped: for
    answers to machines, which should not learn where the server fetches from or how it failed
    inside ('could not fetch x.h5 from https://host/x.h5: [Errno -2] Name or service not known'
    → 'could not fetch x.h5 from a web address: Name or service not known')."""
    return _ERRNO.sub("", _URL.sub("a web address", text))


_FAILURE_WORDS = {
    WeightsFailure.OFFLINE: "could not be downloaded here (no network access) and is not in the local cache",
    WeightsFailure.NOT_FOUND: "the download source no longer has the file, and it is not in the local cache",
    WeightsFailure.DAMAGED: "the downloaded file failed its checksum",
    WeightsFailure.UNEXPECTED: "the download was not the file these weights come in",
    WeightsFailure.CACHE_UNWRITABLE: "the server cannot write its weights cache",
}


def unavailable_reason(failure: LoadFailure | None) -> str:
    """Why weights failed, in a visitor's words, from the recorded cause (never from the error's
    text, which names server paths: logs only)."""
    if failure is not None and failure.cause in _FAILURE_WORDS:
        return _FAILURE_WORDS[failure.cause]
    if failure is not None and failure.kind:  # an error that is not ours: its kind says much (BadZipFile)
        return f"failed to load ({failure.kind}; the server log says why)"
    return "failed to load (the server log says why)"


def unavailable_words(statuses: Sequence[Any], key: str | None) -> str:
    """Why the weights `key` (None: the default, i.e. every candidate) cannot be served, in a
    visitor's words from each failed slot's recorded cause (`SlotStatus`es), never from the
    error's text, which names web addresses and OS error codes ('[Errno -2] ...'): "The weights
    'imagenet' are unavailable on this server (ImageNet: could not be downloaded here ...)."."""
    failed = [s for s in statuses if s.state == "failed" and (key is None or s.key == key)]
    reasons = "; ".join(f"{s.title}: {unavailable_reason(s.failure)}" for s in failed) or "it failed to load"
    which = "No weights could be loaded on this server" if key is None else \
        f"The weights {echo(key)} are unavailable on this server"
    return f"{which} ({reasons})."


NO_SUCH_EVENT = "There is no such event on this page; reload it."
FILE_NOT_SERVED = "That file is not served here (it was never uploaded to this page, or it is gone)."
