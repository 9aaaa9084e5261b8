"""Turning what Gradio hands a handler (an image payload) into a PIL image, with clear errors.

Events take their image with `preprocess=False`, so Gradio never decodes an upload itself: every
upload goes through `xception_core.inputs.images.load_image`, whose limits and messages apply to
the page and the API alike.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import io
import os
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from demo.services import UserError
from xception_core.inputs.images import load_image

MAX_UPLOAD_BYTES = 10 * 2**20  # one image, uploaded or sent as a data URL
# Longest side decoded: 1.5× the display copy (1024) and far above any model input (299), so
# nothing is lost to the page or the model; a 48 MP JPEG is decoded at 1/4 scale (2000×1500).
DECODE_SIDE = 1536

# What a decode holds at its peak, in bytes a decoded pixel, above what the process held before
# (the encoded bytes excluded): `load_image(data, DECODE_SIDE)`'s VmHWM, measured per format and
# mode by tests/demo/test_decode_cost.py, which fails if a figure here is below what it measures
# or far above it. WebP and AVIF decoders hold their own output buffer beside Pillow's image
# whatever the mode; the other formats cost what the file's mode costs (16- and 32-bit modes are
# scaled to 8 bit in copies).
FORMAT_BYTES_PER_PIXEL: dict[str, float] = {"WEBP": 18.0, "AVIF": 11.0}
MODE_BYTES_PER_PIXEL: dict[str, float] = {
    "L": 3.5, "P": 10.0, "RGB": 9.0, "LA": 13.0, "RGBA": 13.0, "CMYK": 13.0, "I;16": 23.0, "I": 19.0, "F": 15.0,
}
UNKNOWN_BYTES_PER_PIXEL = max(MODE_BYTES_PER_PIXEL.values())  # a mode not measured: the dearest

# The decode gate's two pools. Small decodes (any JPEG, which the decoder scales down, and images
# up to a few megapixels) have a pool of their own, so they never wait behind big ones; big
# decodes share the other (a 50 MP WebP, ~900 MB, runs alone).
SMALL_DECODE_BYTES = 64 * 2**20  # a decode costing at most this is small
SMALL_POOL_BYTES = 256 * 2**20
BIG_POOL_BYTES = 1024 * 2**20
# A running page event's decode that its door turn did not cover (a data URL whose header lies
# past the part costed, a second, larger photo) waits at most this long, then decodes anyway.
EVENT_DECODE_WAIT_S = 10.0


def decode_cost(source: Any) -> int:
    """Bytes a decode of `source` (encoded bytes or a path) by `decode_image` holds at its peak,
    from its header alone: the pixels decoded (a JPEG's after the decoder's scaling) times the
    format's or mode's cost. 0 for a PIL image (already decoded) or an unreadable header
    (`load_image` refuses it before decoding)."""
    if isinstance(source, Image.Image):
        return 0
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source) as header:
            width, height = header.size
            if header.format == "JPEG" and max(width, height) > DECODE_SIDE:
                fit = DECODE_SIDE / max(width, height)  # the scale load_image asks the decoder for
                header.draft(header.mode, (max(1, int(width * fit)), max(1, int(height * fit))))
                width, height = header.size
            per_pixel = FORMAT_BYTES_PER_PIXEL.get(
                header.format or "", MODE_BYTES_PER_PIXEL.get(header.mode, UNKNOWN_BYTES_PER_PIXEL))
            return int(width * height * per_pixel)
    except Exception:  # noqa: BLE001 - any unreadable header is load_image's to explain
        return 0


def client_key(request: Any) -> str:
    """Who sent `request` (a Starlette request or Gradio's wrapper of one): the socket's peer, or
    behind a proxy that uvicorn trusts (its `forwarded_allow_ips`, env FORWARDED_ALLOW_IPS), the
    address that proxy put in X-Forwarded-For (uvicorn writes it into the request's client)."""
    client = getattr(request, "client", None)
    return str(getattr(client, "host", None) or "?")


Who = tuple[str, str]  # (client address, session): whose turn a decode is
DECODE_WHO: contextvars.ContextVar[Who] = contextvars.ContextVar("decode_who", default=("", ""))


class DecodeTicket:
    """One request's place at the decode gate: `cost` bytes in one of its pools, for `who`."""

    def __init__(self, cost: int, pool: "_Pool", who: Who):
        self.cost, self.pool, self.who = cost, pool, who
        self.granted = threading.Event()
        self.released = False
        self._wakers: list[Callable[[], None]] = []

    def _grant(self) -> None:
        self.granted.set()
        for wake in self._wakers:
            wake()


DECODE_PREPAID: contextvars.ContextVar[DecodeTicket | None] = contextvars.ContextVar("decode_prepaid", default=None)


@dataclass
class _Pool:
    capacity: int
    held: int = 0
    # address → session → its waiting tickets in order: turns go round the addresses, then round
    # each address's sessions
    waiting: OrderedDict = field(default_factory=OrderedDict)


class DecodeGate:
    """The memory decodes may hold at once, shared fairly: a decode waits until its cost
    (`decode_cost`) fits its pool, and waiting decodes take turns round the client addresses and,
    within an address, round its sessions, so one client's burst of big photos delays another's
    decode by at most one turn. A cost above its pool's capacity runs alone.

    Usable from threads (`turn`) and from the event loop (`ticket`, then `await wait`): a request
    waits for its turn before it takes a working slot.

    Args:
        small_bytes: Decodes costing at most this use the small pool.
        small_pool: Bytes the small decodes may hold together.
        big_pool: Bytes the other decodes may hold together.
    """

    def __init__(self, small_bytes: int = SMALL_DECODE_BYTES, small_pool: int = SMALL_POOL_BYTES,
                 big_pool: int = BIG_POOL_BYTES):
        self.small_bytes = small_bytes
        self.small, self.big = _Pool(small_pool), _Pool(big_pool)
        self._lock = threading.Lock()
        self.peak = 0  # most bytes held at once, both pools
        self.forced = 0  # turns taken over capacity after their timeout (`turn`)

    def ticket(self, cost: int, who: Who = ("", "")) -> DecodeTicket:
        """Queues a decode of `cost` bytes for `who`; it may be granted at once."""
        ticket = DecodeTicket(cost, self.small if cost <= self.small_bytes else self.big, who)
        with self._lock:
            address, session = who
            ticket.pool.waiting.setdefault(address, OrderedDict()).setdefault(session, deque()).append(ticket)
            self._grant(ticket.pool)
        return ticket

    def release(self, ticket: DecodeTicket) -> None:
        """Ends a ticket's turn, or its wait (idempotent)."""
        with self._lock:
            if ticket.released:
                return
            ticket.released = True
            pool = ticket.pool
            if ticket.granted.is_set():
                pool.held -= ticket.cost
            else:
                self._unqueue(ticket)
            self._grant(pool)

    @staticmethod
    def _unqueue(ticket: DecodeTicket) -> None:
        """Takes a waiting ticket out of its pool's queue (under the lock)."""
        sessions = ticket.pool.waiting.get(ticket.who[0], {})
        queue = sessions.get(ticket.who[1])
        if queue is not None and ticket in queue:
            queue.remove(ticket)
            if not queue:
                del sessions[ticket.who[1]]
            if not sessions:
                ticket.pool.waiting.pop(ticket.who[0], None)

    def _grant(self, pool: _Pool) -> None:
        while pool.waiting:
            address, sessions = next(iter(pool.waiting.items()))
            session, queue = next(iter(sessions.items()))
            ticket = queue[0]
            if pool.held and pool.held + ticket.cost > pool.capacity:
                return  # its turn comes once enough is released; nobody jumps it
            queue.popleft()
            if queue:
                sessions.move_to_end(session)
            else:
                del sessions[session]
            if sessions:
                pool.waiting.move_to_end(address)
            else:
                del pool.waiting[address]
            pool.held += ticket.cost
            self.peak = max(self.peak, self.small.held + self.big.held)
            ticket._grant()

    async def wait(self, ticket: DecodeTicket) -> None:
        """Waits in the event loop for `ticket`'s turn; cancelled, the ticket is released."""
        loop = asyncio.get_running_loop()
        turn = loop.create_future()

        def wake() -> None:
            if not turn.done():
                turn.set_result(None)

        with self._lock:
            if ticket.granted.is_set():
                wake()
            else:
                ticket._wakers.append(lambda: loop.call_soon_threadsafe(wake))
        try:
            await turn
        except BaseException:
            self.release(ticket)
            raise

    @contextlib.contextmanager
    def turn(self, cost: int, who: Who | None = None, timeout: float | None = None) -> Iterator[DecodeTicket]:
        """Holds a turn for `cost` bytes for the length of the block (the calling thread waits).
        With `timeout`, a turn not granted by then is taken anyway, over the pool's capacity
        (counted in `forced`): a page event's handler that already holds a working slot must not
        wait for turns held by events queued behind that slot."""
        ticket = self.ticket(cost, DECODE_WHO.get() if who is None else who)
        try:
            if not ticket.granted.wait(timeout):
                self._force(ticket)
            yield ticket
        finally:
            self.release(ticket)

    def _force(self, ticket: DecodeTicket) -> None:
        with self._lock:
            if ticket.granted.is_set():
                return
            self._unqueue(ticket)
            ticket.pool.held += ticket.cost
            self.forced += 1
            ticket._grant()

    def held(self) -> int:
        """Bytes held now by granted turns, both pools."""
        with self._lock:
            return self.small.held + self.big.held

    def waiting(self) -> int:
        """Tickets waiting for their turn, both pools."""
        with self._lock:
            return sum(len(q) for pool in (self.small, self.big) for s in pool.waiting.values() for q in s.values())


DECODES = DecodeGate()  # the process's one gate: every route's decodes go through it


def payload_to_image(payload: Any, upload_dir: Path) -> Image.Image:
    """A Gradio image payload (FileData dict, data: URL, or a path Gradio cached) → RGB image.

    Only files inside `upload_dir` (Gradio's upload and example cache) are read.

    Raises:
        UserError: No image, a file outside Gradio's upload folder, or anything `load_image`
            rejects (its message says what was received and what is allowed).
    """
    if payload is None:
        raise UserError("No image: upload one, take a webcam snapshot, paste one, or pick an example.")
    if isinstance(payload, Image.Image):
        source: Any = payload
    else:
        if isinstance(payload, dict):
            url, path = payload.get("url"), payload.get("path")
        else:
            url, path = getattr(payload, "url", None), getattr(payload, "path", payload)
        if isinstance(url, str) and url.startswith("data:"):
            encoded = url.partition(",")[2]
            if len(encoded) * 3 // 4 > MAX_UPLOAD_BYTES:  # checked before decoding a byte
                raise UserError(f"The image data is about {len(encoded) * 3 // 4 / 2**20:.1f} MB; "
                                f"at most {MAX_UPLOAD_BYTES / 2**20:.0f} MB is accepted.")
            try:
                source = base64.b64decode(encoded, validate=False)
            except ValueError:
                raise UserError("The pasted image data is not valid base64.") from None
        elif isinstance(path, (str, os.PathLike)):
            resolved = Path(path).resolve()
            if not resolved.is_relative_to(Path(upload_dir).resolve()):
                raise UserError("That file is not an upload of this app.")
            if not resolved.is_file():  # deleted by the file budget, or never a file: no path, no errno
                raise UserError("That upload is no longer on the server; upload the photo again.")
            source = resolved
        else:
            raise UserError(f"Unsupported image payload of type {type(payload).__name__}.")
    try:
        return decode_image(source)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def decode_image(source: bytes | Path | Image.Image, name: str | None = None,
                 gate: DecodeGate | None = None) -> Image.Image:
    """The one decode policy of every route that takes a visitor's image (page events, the plain
    HTTP API, and whatever decodes for Ray Serve replicas): `load_image` no larger than
    `DECODE_SIDE` a side, in a turn of the decode gate (`DECODES`) for what it costs
    (`decode_cost`). Where the route took a turn before it took a working slot
    (`DECODE_PREPAID`, granted: a page event's, taken before Gradio's queue took the event), a
    decode it covers runs at once; otherwise the caller's thread waits for a turn, as `DECODE_WHO`.

    Args:
        source: Encoded bytes, a file path, or a PIL image (used as it is).
        name: How error messages name the input (see `load_image`).
        gate: The gate (default `DECODES`).

    Returns:
        An RGB image, longest side ≤ `DECODE_SIDE` for encoded input.

    Raises:
        InvalidImageError: (a ValueError) anything `load_image` refuses; the message says what
            was received and what is allowed.
    """
    cost = decode_cost(source)
    prepaid = DECODE_PREPAID.get()
    if prepaid is not None and prepaid.granted.is_set() and not prepaid.released and cost <= prepaid.cost:
        return load_image(source, DECODE_SIDE, name)
    # Inside a running page event (which holds a working slot) the wait is bounded.
    in_event = DECODE_WHO.get() != ("", "")
    with (gate or DECODES).turn(cost, timeout=EVENT_DECODE_WAIT_S if in_event else None):
        return load_image(source, DECODE_SIDE, name)
