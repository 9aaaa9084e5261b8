"""Budgets every request, session and file is held to, beyond what Gradio enforces itself.

- `BodyLimitMiddleware`: what a request body may cost on every route: its size, a fixed deadline,
  a share of one process-wide cap on bytes held by bodies still arriving, and for JSON an
  object count checked before anything parses it. Gradio caps multipart uploads
  (`max_file_size`) but reads any JSON body whole (`queue/join`, `call/<api>`, `run/predict`),
  with no deadline and in the event loop.
- `deadline_protocol`: uvicorn's HTTP/1.1 protocol with deadlines on the request's headers and,
  as a backstop, on its body, that hold whether or not the app is reading.
- `UploadGate`: the disk budget enforced as an upload arrives (room reserved, made from visitors'
  oldest files, or the upload refused in words).
- `EventGate`: events refused before they run, in one sentence: browser-only events, select
  handlers without event data, and a session's or address's events past its share of the queue;
  the queue kept in fair order over client addresses; an event's decode turn taken
  (`demo.services.payloads.DECODES`) before it enters the queue.
- Chores, each with one job, that `Housekeeping` runs every few seconds:
  - `SessionSweep` drops whole sessions idle for longer than a TTL (Gradio keeps a session,
    ~220 KB of page config plus its state, until 10,000 newer ones push it out), and drops each
    session's page-config snapshot (`SessionState.config_values`: a copy of every component's
    config, ~220 KB, plus each event's raw inputs, so a data URL stays there otherwise). Gradio
    reads that snapshot only to serve deep links, which this app does not offer; what an event
    needs (State values, updated components) is kept.
  - `FileBudget` keeps the visitors' files on disk (uploads, generated images, Teach's
    downloads) under a byte budget, oldest first, on top of Gradio's age-based `delete_cache`;
    uploads and downloads reserve their room with it before they are written.
  - `EmptyFolders` removes the per-file folders Gradio leaves behind once their file is gone.
  - `OrphanHeartbeats` stops Gradio's per-stream heartbeat tasks left behind by a stream that
    cannot end: a client that stops reading during a large result (a phone that lost its network
    keeps its TCP connection open for minutes) leaves the stream waiting for the socket to drain
    after its event is over, and its heartbeat task queueing a message every 15 s that nobody
    reads, for as long as the connection stays open.
  - `release_free_memory` returns freed heap memory to the system; `map_big_blocks` (once, at
    start) makes big allocations go back to it at once.

Gradio internals used (gradio 6.31): `Queue.push`, `Blocks.process_api`, the queue's
`event_queue_per_concurrency_id`, `BlockFunction.fn`; `StateHolder.session_data`,
`.time_last_used`, `.lock`, `.delete_state`; `SessionState.config_values`; `Blocks.temp_file_sets`,
component `keep_in_cache`; the queue's `pending_event_ids_session` and
`pending_messages_per_session`, and the heartbeat task of `queue_data_helper`. The tests in
tests/demo/test_limits.py, test_refused_events.py and test_page_files.py fail if these move.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import datetime
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from demo.services import payloads
from demo.services.payloads import DECODE_PREPAID, DECODE_WHO, DecodeTicket, client_key, decode_cost

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------- request bodies


class _Refusal(Exception):
    """A request the guard answers itself: `status` and a sentence."""

    def __init__(self, status: int, text: str):
        super().__init__(text)
        self.status, self.text = status, text


@dataclass
class BodyLoad:
    """Bytes of request bodies not yet fully received, all requests of the process together
    (`held`), the most ever held at once (`peak`), and how many bodies were refused for being late,
    for the cap, or for their JSON's cost."""

    held: int = 0
    peak: int = 0
    late: int = 0
    over_cap: int = 0
    too_costly: int = 0


def parsed_as_json(content_type: str) -> bool:
    """Whether FastAPI parses a body of this Content-Type as JSON (none at all, or
    application/json and application/*+json), as `fastapi.routing` decides."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if not kind:
        return True
    main, _, sub = kind.partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


def json_items(body: bytes) -> int:
    """An upper bound on the objects, arrays and items a JSON body would parse into: its `{`, `[`
    and `,` bytes (in strings too: a base64 data URL has one comma). Counting runs in C, at
    memory speed; parsing 13 MB of `{}` would make 4 million dicts (about 600 MB)."""
    return body.count(b"{") + body.count(b"[") + body.count(b",")


class BodyLimitMiddleware:
    """Pure ASGI middleware, in front of every route: what a request body may cost.

    - Size: a declared Content-Length over `max_bytes` is refused (413) before a byte is read; a
      body without one (chunked) is counted as it arrives and refused once past the limit.
    - Time: the whole body must arrive within `deadline_s` of the request's start (408), however
      it trickles: a fixed deadline, not one that grows with the bytes received.
    - Memory held by unfinished bodies: one process-wide count (`load.held`) of the bytes received
      from bodies still arriving; a body that would take it past `held_cap` is refused (503).
    - JSON: a body FastAPI would parse as JSON (`parsed_as_json`) is read here in full first and
      its cost counted off the event loop (`json_items`); more than `max_json_items` is refused
      (413) before anything parses it. Paths for which `raw_body(path)` is true read their body
      as bytes themselves (the image API) and are exempt.
    - Every answer gets `X-Content-Type-Options: nosniff` (an upload named `.jpg` holding HTML is
      never sniffed into a page).

    Once a refusal is decided the app sees the body end (`http.disconnect`) and whatever it
    answers is replaced by the refusal, with `Connection: close`. Refusals are plain text, except
    where `answer(path, status, message)` returns `(content_type, body)` for the request's path (an
    API whose errors have a declared shape). Each refusal is one log line, without the request's
    content.
    """

    def __init__(self, app: Any, max_bytes: int,
                 answer: Callable[[str, int, str], tuple[str, bytes] | None] | None = None, *,
                 deadline_s: float | None = None, held_cap: int | None = None,
                 max_json_items: int | None = None, raw_body: Callable[[str], bool] | None = None,
                 load: BodyLoad | None = None):
        self.app, self.max_bytes, self.answer = app, int(max_bytes), answer
        self.deadline_s, self.held_cap, self.max_json_items = deadline_s, held_cap, max_json_items
        self.raw_body = raw_body or (lambda path: False)
        self.load = load if load is not None else BodyLoad()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = self._nosniff(send)
        content_type = ""
        declared: int | None = None
        chunked = False
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await self._refuse(scope, send, _Refusal(400, "Invalid Content-Length header."))
                    return
                if declared > self.max_bytes:
                    await self._refuse(scope, send, _Refusal(413, self.message))
                    return
            elif name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"transfer-encoding":
                chunked = True
        if not chunked and not declared:
            # No body: nothing to count or time. Its receive is left alone, also for the app's
            # disconnect checks (Starlette's `is_disconnected` calls it in a cancelled scope, every
            # 50 ms in Gradio's streams: a deadline here would end a long stream).
            await self.app(scope, receive, send)
            return
        body = _Body(self, scope, receive)
        refused: _Refusal | None = None
        try:
            if (self.max_json_items is not None and scope.get("method") in ("POST", "PUT", "PATCH")
                    and parsed_as_json(content_type) and not self.raw_body(scope.get("path", ""))):
                receive = await self._costed_json(body)
            else:
                receive = body.receive
        except _Refusal as refusal:
            refused = refusal
        if refused is not None:  # answered outside the `except`: its traceback held the chunks read
            body.release()
            await self._refuse(scope, send, refused)
            return
        started = False

        async def guarded_send(message):
            nonlocal started
            if body.refusal is None:
                started = True
                await send(message)

        try:
            await self.app(scope, receive, guarded_send)
        except Exception:
            if body.refusal is None:
                raise
        finally:
            body.release()
        if body.refusal is not None and not started:
            await self._refuse(scope, send, body.refusal)

    async def _costed_json(self, body: "_Body"):
        """Reads the whole body, checks its JSON cost in a worker thread, and returns a `receive`
        that hands the app the body in one message, then the client's later messages."""
        chunks = []
        while True:
            message = await body.receive()
            if message["type"] != "http.request":
                chunks.clear()  # refused: what was read goes now, not when the answer is sent
                if body.refusal is not None:
                    raise body.refusal
                raise _Refusal(400, "The request ended before its body did.")
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        data = b"".join(chunks)
        del chunks
        items = await asyncio.to_thread(json_items, data)
        if items > self.max_json_items:
            self.load.too_costly += 1
            del data  # not kept alive by the refusal's traceback while it is answered
            raise _Refusal(413, f"The request's JSON has too many parts: at most {self.max_json_items:,} "
                                "objects, arrays and items are accepted.")
        whole: list[Any] = [{"type": "http.request", "body": data, "more_body": False}]
        del data

        async def replay():
            return whole.pop() if whole else await body.client_receive()

        return replay

    @staticmethod
    def _nosniff(send):
        async def with_header(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not any(name.lower() == b"x-content-type-options" for name, _ in headers):
                    headers.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": headers}
            await send(message)
        return with_header

    async def _refuse(self, scope, send, refusal: _Refusal) -> None:
        logger.info("%s %s refused (%d): %s", scope.get("method", ""), scope.get("path", "")[:200],
                    refusal.status, refusal.text)
        shaped = self.answer(scope.get("path", ""), refusal.status, refusal.text) if self.answer else None
        content_type, body = shaped or ("text/plain; charset=utf-8", refusal.text.encode())
        try:
            await send({"type": "http.response.start", "status": refusal.status,
                        "headers": [(b"content-type", content_type.encode()),
                                    (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})
        except OSError:  # the client is gone: nobody to answer
            pass

    @property
    def message(self) -> str:
        return f"Request body too large: at most {self.max_bytes / 2**20:.1f} MB is accepted."


class _Body:
    """One request's body as `BodyLimitMiddleware` lets it through: `receive` under the deadline,
    the size limit and the process-wide cap, its bytes counted in `load.held` until it is complete
    (or refused, or the request ends: `release`)."""

    def __init__(self, guard: BodyLimitMiddleware, scope, receive):
        self.guard, self.client_receive = guard, receive
        self.start = time.monotonic()
        self.received = 0  # bytes of this body so far
        self.held = 0  # of those, counted in guard.load.held
        self.complete = False
        self.refusal: _Refusal | None = None

    def release(self) -> None:
        self.guard.load.held -= self.held
        self.held = 0

    def _refused(self, refusal: _Refusal) -> dict:
        self.refusal = refusal
        self.release()
        return {"type": "http.disconnect"}

    async def receive(self) -> dict:
        guard = self.guard
        if self.refusal is not None:
            return {"type": "http.disconnect"}
        if self.complete:  # after the body only the disconnect comes: no deadline on waiting for it
            return await self.client_receive()
        try:
            if guard.deadline_s is None:
                message = await self.client_receive()
            else:
                left = guard.deadline_s - (time.monotonic() - self.start)
                if left <= 0:
                    raise TimeoutError
                message = await asyncio.wait_for(self.client_receive(), left)
        except TimeoutError:
            guard.load.late += 1
            return self._refused(_Refusal(408, f"The request body did not arrive within {guard.deadline_s:g} s "
                                                f"({self.received:,} bytes came); send it at once."))
        if message["type"] != "http.request":
            self.release()
            return message
        size = len(message.get("body", b""))
        self.received += size
        if self.received > guard.max_bytes:
            return self._refused(_Refusal(413, guard.message))
        if not message.get("more_body", False):
            self.complete = True
            self.release()
            return message
        if guard.held_cap is not None and guard.load.held + size > guard.held_cap:
            guard.load.over_cap += 1
            return self._refused(_Refusal(503, "The server is receiving too many requests at once; "
                                               "try again in a moment."))
        guard.load.held += size
        guard.load.peak = max(guard.load.peak, guard.load.held)
        self.held += size
        return message


def deadline_protocol(header_s: float, body_s: float) -> type:
    """uvicorn's HTTP/1.1 protocol (h11) with two deadlines per request, kept by the event loop
    whatever the app does: the request line and headers must be complete within `header_s` of the
    connection's first byte (or of its opening), else it is answered 408 and closed (just closed
    when nothing came: a browser's preconnect; uvicorn has no such deadline: a half-sent request
    line holds its socket for ever); and the body within
    `body_s` of the headers, else the connection is closed (the app sees a disconnect). The body's
    deadline is a backstop under `BodyLimitMiddleware`'s, which answers first and in words;
    this one also ends a body the app is not reading. Pass the class as `uvicorn.Config(http=...)`."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    late_headers = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                    b"connection: close\r\ncontent-length: %d\r\n\r\n%s")
    words = f"The request's headers did not arrive within {header_s:g} s.".encode()

    class DeadlineH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None
        _body_timer: asyncio.TimerHandle | None = None
        _started = False  # bytes of a request head have arrived since the last request

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._header_timer = self.loop.call_later(header_s, self._headers_late)

        def data_received(self, data: bytes) -> None:
            if self._header_timer is None and self.conn.their_state is h11.IDLE:
                self._header_timer = self.loop.call_later(header_s, self._headers_late)
            self._started = True
            super().data_received(data)
            self._follow()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._follow()

        def connection_lost(self, exc) -> None:
            self._cancel()
            super().connection_lost(exc)

        def _follow(self) -> None:
            """Cancels or arms the timers for where the client's side of the exchange is now."""
            state = self.conn.their_state
            if state is not h11.IDLE and self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
                self._started = False
            if state is h11.SEND_BODY:
                if self._body_timer is None:
                    self._body_timer = self.loop.call_later(body_s, self._body_late)
            elif self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None

        def _cancel(self) -> None:
            for timer in (self._header_timer, self._body_timer):
                if timer is not None:
                    timer.cancel()
            self._header_timer = self._body_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                if self._started:  # a connection that sent nothing (a browser's preconnect) is just closed
                    logger.info("request headers not complete after %g s: connection closed", header_s)
                    self.transport.write(late_headers % (len(words), words))
                self.transport.close()

        def _body_late(self) -> None:
            self._body_timer = None
            if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
                logger.info("request body not complete after %g s: connection closed", body_s)
                self.transport.close()

    return DeadlineH11Protocol


# ----------------------------------------------------------------------------------- the queue


def _needs_event_data(fn: Any) -> bool:
    """Whether a handler takes Gradio event data (`gr.SelectData` and the like), which a client
    must then send (`event_data`)."""
    import inspect

    from gradio.events import EventData

    try:
        parameters = inspect.signature(fn, eval_str=True).parameters.values()
    except (TypeError, ValueError, NameError):
        return False
    return any(isinstance(p.annotation, type) and issubclass(p.annotation, EventData) for p in parameters)


class EventGate:
    """In front of Gradio's queue (`Queue.push`, the one door of `queue/join`) and of its direct
    calls (`Blocks.process_api`, behind `run/predict` for events outside the queue): refuses in
    one sentence and one log line, before anything runs, an event that cannot run (one that runs
    in the browser only, or a select handler sent without its event data: Gradio would run it and
    log a traceback), and in the queue, an event from a session that already has `share` events
    waiting, or from a client address that has `address_share`: one client cannot fill the queue
    for everyone. (Behind a proxy that uvicorn is not told to trust, every visitor has the
    proxy's address: the address share is then everyone's, hence larger than a session's.)

    Two more things happen at that door, for what is left:
    - Fair order: each event joins its queue after at most one waiting event of every other client
      address per event of its own address ahead of it (round robin over addresses; Gradio's
      queue is first come, first served), so a visitor waits a few events, not another's burst.
    - Its decode turn: an event naming images (uploads in `upload_dir`, data URLs) waits for its
      turn at the decode gate (`demo.services.payloads.DECODES`, for the dearest of its images)
      before it enters Gradio's queue, where it would take a working slot; its handler's decodes
      then run in that turn (`DECODE_PREPAID`), which ends when the event does.

    Args:
        blocks: The page, after `blocks.queue(...)`.
        share: Most waiting events per session.
        address_share: Most waiting events per client address (`client_key`).
        upload_dir: Gradio's upload folder: the files an event names there are costed.
    """

    BROWSER_ONLY = "This event runs in the browser only; there is nothing to run on the server."
    NO_EVENT_DATA = "This event needs the clicked item's data (event_data), and none was sent."
    OVER_SHARE = ("You already have {n} requests waiting; wait for them to finish (this server shares its "
                  "queue between visitors).")

    MAX_COSTED = 64  # images costed per event (Teach's add takes 30)

    def __init__(self, blocks: Any, share: int, address_share: int, upload_dir: Path | None = None):
        self.share, self.address_share = share, address_share
        self.upload_dir = Path(upload_dir).resolve() if upload_dir is not None else None
        self.refused = 0
        self._turns: dict[str, DecodeTicket] = {}  # event id → its decode turn, until the event ends
        self._running: set[str] = set()  # event ids whose handler runs now
        self._unclaimed: set[str] = set()  # turns seen with no waiting or running event last look
        self._arriving: list[tuple[str, str]] = []  # (address, session) of events waiting for a decode turn
        self.blocks = blocks

    @property
    def blocks(self) -> Any:
        return self._blocks

    @blocks.setter
    def blocks(self, blocks: Any) -> None:
        """Guards `blocks` (also a page that reload mode swaps in, which keeps the old queue)."""
        self._blocks = blocks
        self._needs_data: dict[int, bool] = {}
        queue = blocks._queue
        if queue.push != self.push:
            self._push, queue.push = queue.push, self.push
        if blocks.process_api != self.process_api:
            self._process_api, blocks.process_api = blocks.process_api, self.process_api

    def waiting(self) -> list[Any]:
        """The events waiting in every concurrency group's queue."""
        queues = getattr(self.blocks._queue, "event_queue_per_concurrency_id", {})
        return [event for q in list(queues.values()) for event in list(q.queue)]

    def cannot_run(self, index: Any, fn: Any, event_data: Any) -> str | None:
        """Why event `index` (`fn`, Gradio's BlockFunction) cannot run with `event_data` (the
        client's raw value), or None."""
        if fn is None:
            return None
        if fn.fn is None:
            return self.BROWSER_ONLY
        if event_data is None and self._takes_data(index, fn):
            return self.NO_EVENT_DATA
        return None

    def _refuse(self, index: Any, words: str) -> None:
        self.refused += 1
        logger.info("event %s refused: %s", index, words)

    async def push(self, body: Any, request: Any, username: str | None):
        fns = getattr(self.blocks, "fns", {})
        fn = fns.get(body.fn_index) if isinstance(body.fn_index, int) else None
        refusal = None
        mine = client_key(request)
        if words := self.cannot_run(body.fn_index, fn, getattr(body, "event_data", None)):
            refusal = words, "error"
        else:
            waiting = self.waiting()
            same_session = sum(1 for e in waiting if getattr(e, "session_hash", None) == body.session_hash)
            same_session += sum(1 for _, s in self._arriving if s == body.session_hash)
            same_client = sum(1 for e in waiting if client_key(getattr(e, "request", None)) == mine)
            same_client += sum(1 for a, _ in self._arriving if a == mine)
            if same_session >= self.share or same_client >= self.address_share:
                refusal = self.OVER_SHARE.format(n=max(same_session, same_client)), "queue_full"
        if refusal is not None:
            self._refuse(body.fn_index, refusal[0])
            return False, refusal[0], refusal[1]
        # A batched event's handler runs for several events at once, under no one event's id:
        # its decodes take their turns in the handler's thread instead.
        ticket = None if getattr(fn, "batch", False) else await self._decode_turn(body, mine)
        try:
            result = await self._push(body=body, request=request, username=username)
        except BaseException:
            if ticket is not None:
                payloads.DECODES.release(ticket)
            raise
        ok, event_id = result[0], result[1]
        if ticket is not None:
            if ok and isinstance(event_id, str):
                self._turns[event_id] = ticket
            else:
                payloads.DECODES.release(ticket)
        if ok:
            self._in_fair_order(fn)
        return result

    async def _decode_turn(self, body: Any, address: str) -> DecodeTicket | None:
        """Waits for the decode turn of the dearest image `body` names (None: it names none)."""
        cost = await asyncio.to_thread(self.decode_cost, getattr(body, "data", None))
        if not cost:
            return None
        who = (address, str(body.session_hash))
        ticket = payloads.DECODES.ticket(cost, who)
        self._arriving.append(who)
        try:
            await payloads.DECODES.wait(ticket)  # released if the client leaves meanwhile
        finally:
            self._arriving.remove(who)
        return ticket

    def decode_cost(self, data: Any) -> int:
        """What the dearest image in an event's data costs to decode (`decode_cost`): files in
        `upload_dir` and data URLs, at most `MAX_COSTED` of them. Blocking (reads headers)."""
        found: list[Any] = []

        def walk(value: Any, depth: int = 0) -> None:
            if len(found) >= self.MAX_COSTED or depth > 4:
                return
            if isinstance(value, dict):
                url, path = value.get("url"), value.get("path")
                if isinstance(url, str) and url.startswith("data:"):
                    try:  # the header is at the start: a few KB of it decoded
                        found.append(base64.b64decode(url.partition(",")[2][:1 << 16], validate=False))
                    except ValueError:
                        pass
                elif isinstance(path, str) and self.upload_dir is not None:
                    try:
                        resolved = Path(path).resolve()
                    except (OSError, ValueError):
                        return
                    if resolved.is_relative_to(self.upload_dir) and resolved.is_file():
                        found.append(resolved)
                else:
                    for item in list(value.values())[:16]:
                        walk(item, depth + 1)
            elif isinstance(value, (list, tuple)):
                for item in value[:self.MAX_COSTED]:
                    walk(item, depth + 1)

        walk(data)
        return max((decode_cost(source) for source in found), default=0)

    def _in_fair_order(self, fn: Any) -> None:
        """Orders the waiting events of `fn`'s queue round robin over client addresses, each
        address's events in their order of arrival."""
        queues = getattr(self.blocks._queue, "event_queue_per_concurrency_id", {})
        queue = queues.get(getattr(fn, "concurrency_id", None))
        if queue is None or len(queue.queue) < 2:
            return
        seen: dict[str, int] = {}
        ranks = []
        for event in queue.queue:
            address = client_key(getattr(event, "request", None))
            ranks.append(seen.get(address, 0))
            seen[address] = ranks[-1] + 1
        order = sorted(range(len(ranks)), key=ranks.__getitem__)  # stable: arrival order within a rank
        queue.queue[:] = [queue.queue[i] for i in order]

    def drop_stale_turns(self) -> int:
        """Ends the decode turns of events no longer waiting nor running on two looks in a row
        (the client left, or the queue dropped them); returns how many. In the event loop."""
        live = {getattr(e, "_id", None) for e in self.waiting()} | self._running
        stale = {i for i in self._turns if i not in live}
        ended = 0
        for event_id in stale & self._unclaimed:
            payloads.DECODES.release(self._turns.pop(event_id))
            ended += 1
        self._unclaimed = stale - {i for i in stale if i not in self._turns}
        return ended

    async def process_api(self, block_fn: Any, *args: Any, **kwargs: Any):
        import gradio as gr

        fn = self.blocks.fns.get(block_fn) if isinstance(block_fn, int) else block_fn
        index = getattr(fn, "_id", block_fn)
        data = kwargs.get("event_data")
        if words := self.cannot_run(index, fn, getattr(data, "_data", data)):
            self._refuse(index, words)
            raise gr.Error(words, print_exception=False)
        event_id = kwargs.get("event_id")
        ticket = self._turns.get(event_id) if isinstance(event_id, str) else None
        request = kwargs.get("request")
        session = getattr(request, "session_hash", None) or kwargs.get("session_hash") or ""
        # The handler's thread gets these (Gradio runs it with anyio, which copies the context).
        prepaid = DECODE_PREPAID.set(ticket)
        who = DECODE_WHO.set((client_key(request), str(session)))
        if isinstance(event_id, str):
            self._running.add(event_id)
        try:
            return await self._process_api(block_fn, *args, **kwargs)
        finally:
            DECODE_PREPAID.reset(prepaid)
            DECODE_WHO.reset(who)
            if isinstance(event_id, str):
                self._running.discard(event_id)
                if (ended := self._turns.pop(event_id, None)) is not None:
                    payloads.DECODES.release(ended)

    def _takes_data(self, index: int, fn: Any) -> bool:
        if index not in self._needs_data:
            self._needs_data[index] = _needs_event_data(fn.fn)
        return self._needs_data[index]


# ----------------------------------------------------------------------------------- sessions


@dataclass(frozen=True)
class SessionSweepResult:
    """What one session sweep dropped."""

    sessions_expired: int = 0
    configs_dropped: int = 0

    def summary(self) -> str | None:
        if not self.sessions_expired:
            return None
        return f"{self.sessions_expired} idle sessions expired, {self.configs_dropped} page configs dropped"


class SessionSweep:
    """Expires idle Gradio sessions and drops the others' page-config snapshots once their events
    are over. Runs in the server's event loop, where Gradio touches sessions.

    Args:
        blocks: The mounted `gr.Blocks` (its `state_holder` exists once mounted).
        ttl_s: Sessions not used for this long are dropped.
        settle_s: A session's page-config snapshot is dropped once it has not been used for this
            long (its event is over).
    """

    def __init__(self, blocks: Any, *, ttl_s: float, settle_s: float = 2.0):
        self.blocks, self.ttl_s, self.settle_s = blocks, ttl_s, settle_s

    def __call__(self, now: datetime.datetime | None = None) -> SessionSweepResult:
        holder = getattr(self.blocks, "state_holder", None)
        if holder is None:
            return SessionSweepResult()
        now = now or datetime.datetime.now()
        ttl = datetime.timedelta(seconds=self.ttl_s)
        settle = datetime.timedelta(seconds=self.settle_s)
        expired = dropped = 0
        for session_id in list(holder.session_data):
            last = holder.time_last_used.get(session_id)
            if last is not None and now - last > ttl:
                holder.delete_state(session_id)  # runs gr.State delete callbacks
                with holder.lock:
                    holder.session_data.pop(session_id, None)
                    holder.time_last_used.pop(session_id, None)
                expired += 1
                continue
            session = holder.session_data.get(session_id)
            if session is None or not session.config_values or (last is not None and now - last < settle):
                continue
            session.config_values.clear()  # Gradio re-adds the entries a later event touches
            dropped += 1
        return SessionSweepResult(expired, dropped)


# ----------------------------------------------------------------------------------- files


class EmptyFolders:
    """Removes empty folders under Gradio's upload folder: Gradio stores each file in a folder
    named by its hash and never removes the folder.

    Args:
        upload_dir: Gradio's upload folder (never removed itself; nothing outside it is touched).
        min_age_s: A folder left alone for less than this is kept in a full sweep: one just made
            is about to receive its file.
        keep: Folders never removed, even empty (the page's own, `demo.server.page_folders`).
    """

    def __init__(self, upload_dir: Path, min_age_s: float, keep: Sequence[Path] = ()):
        self.upload_dir, self.min_age_s = Path(upload_dir), min_age_s
        self.keep = tuple(Path(k).resolve() for k in keep)

    def remove(self, folders: set[Path], min_age_s: float = 0.0, now: float | None = None) -> None:
        """Removes those of `folders` that are empty, inside the upload folder, and at least
        `min_age_s` old."""
        root = self.upload_dir.resolve()
        now = time.time() if now is None else now
        for folder in folders:
            try:
                resolved = folder.resolve()
                inside = resolved != root and resolved.is_relative_to(root) and resolved not in self.keep
                if inside and now - folder.stat().st_mtime >= min_age_s and not any(folder.iterdir()):
                    folder.rmdir()
            except OSError:
                pass

    def sweep(self, now: float | None = None) -> None:
        """Every empty folder directly under the upload folder, left alone for `min_age_s`
        (those left by Gradio's own age-based deletion)."""
        try:
            folders = {p for p in self.upload_dir.iterdir() if p.is_dir()}
        except OSError:
            return
        self.remove(folders, self.min_age_s, now)


@dataclass(frozen=True)
class FileTrimResult:
    """What one trim of Gradio's files deleted."""

    files_deleted: int = 0
    bytes_freed: int = 0
    bytes_kept: int = 0  # of the files counted, those left

    def summary(self) -> str | None:
        if not self.files_deleted:
            return None
        return f"{self.files_deleted} files ({self.bytes_freed / 2**20:.1f} MB) deleted"


class FileBudget:
    """Keeps the visitors' files on disk under a byte budget: every file under the upload folder
    (uploads, generated images, Teach's downloads, whether or not Gradio's file sets list them yet)
    except the page's own (`protected`) and examples Gradio marks keep-in-cache; the oldest go
    first, with their emptied folders. Room is also reserved ahead for bytes about to be written
    (an upload arriving, an export being written: `reserve`), so that those and the files already
    there never pass the budget together. Blocking file-system work: run it in a worker thread.

    Args:
        blocks: The mounted `gr.Blocks` (its `temp_file_sets` list what Gradio wrote; a file
            deleted here leaves them too).
        budget_bytes: Most bytes of visitors' files on disk.
        min_age_s: Files younger than this are never deleted (an upload about to be used).
        folders: Removes the folders emptied by a trim; its upload folder is the one counted.
        protected: Folders of the page's own files: a file there is never counted nor deleted, and
            is taken out of any file set it reached, so Gradio's own age-based cleaner skips it too.
        headroom_bytes: Kept free below the budget by trims and reservations, for the files events
            write between two sweeps (overlays, generated images), which no reservation covers.
    """

    def __init__(self, blocks: Any, *, budget_bytes: int, min_age_s: float, folders: EmptyFolders,
                 protected: Sequence[Path] = (), headroom_bytes: int = 0):
        self.blocks, self.budget_bytes, self.min_age_s, self.folders = blocks, budget_bytes, min_age_s, folders
        self.headroom_bytes = min(headroom_bytes, budget_bytes // 4)
        self.protected = tuple(Path(p).resolve() for p in protected)
        self.reserved = 0  # bytes reserved for files being written now
        self.refused = 0
        self._lock = threading.Lock()

    @property
    def target_bytes(self) -> int:
        """What trims and reservations keep the files and reservations under."""
        return self.budget_bytes - self.headroom_bytes

    def is_protected(self, name: str) -> bool:
        """Whether `name` lies in one of the page's own folders (links resolved)."""
        try:
            resolved = Path(name).resolve()
        except (OSError, ValueError):
            return True  # a path that cannot be resolved is never deleted
        return any(resolved.is_relative_to(folder) for folder in self.protected)

    def __call__(self, now: float | None = None, room: int = 0) -> FileTrimResult:
        """Deletes the oldest files until they, the reservations and `room` more bytes fit the
        target (files younger than `min_age_s` excepted)."""
        with self._lock:  # the housekeeping's thread, the upload gate's and an export's
            return self._trim(time.time() if now is None else now, room)

    def make_room(self, size: int) -> bool:
        """Whether `size` more bytes fit the budget, once the oldest files that must go are gone."""
        return self(room=size).bytes_kept + self.reserved + size <= self.target_bytes

    def reserve(self, size: int) -> bool:
        """Makes room for `size` bytes about to be written and holds it until `release(size)`;
        False (nothing held) when even deleting every old enough file leaves too little."""
        with self._lock:
            kept = self._trim(time.time(), size).bytes_kept
            if kept + self.reserved + size > self.target_bytes:
                self.refused += 1
                return False
            self.reserved += size
            return True

    def release(self, size: int) -> None:
        """Ends a reservation (the bytes are written and counted on disk now, or never came)."""
        with self._lock:
            self.reserved -= size

    @contextlib.contextmanager
    def room(self, size: int) -> Iterator[bool]:
        """`reserve(size)` for the length of the block: yields whether the room was made."""
        held = self.reserve(size)
        try:
            yield held
        finally:
            if held:
                self.release(size)

    def _on_disk(self) -> list[tuple[float, str, int]]:
        """(mtime, path, size) of every visitors' file under the upload folder."""
        found: list[tuple[float, str, int]] = []
        root = self.folders.upload_dir
        for folder, subfolders, names in os.walk(root):
            if self.protected:
                subfolders[:] = [d for d in subfolders if not self.is_protected(os.path.join(folder, d))]
            for name in names:
                path = os.path.join(folder, name)
                try:
                    stat = os.lstat(path)
                except OSError:
                    continue
                found.append((stat.st_mtime, path, stat.st_size))
        return found

    def _trim(self, now: float, room: int) -> FileTrimResult:
        keep: set[str] = set()
        for component in list(self.blocks.blocks.values()):
            keep.update(getattr(component, "keep_in_cache", ()))
        sets: dict[str, list[set]] = {}
        for file_set in list(self.blocks.temp_file_sets):
            for name in list(file_set):
                if self.protected and self.is_protected(name):
                    file_set.discard(name)
                elif not os.path.lexists(name):
                    file_set.discard(name)
                else:
                    sets.setdefault(os.path.abspath(name), []).append(file_set)
        entries = self._on_disk()
        total = sum(size for _, _, size in entries)
        entries = sorted(e for e in entries if e[1] not in keep)
        deleted = freed = 0
        emptied: set[Path] = set()
        for mtime, name, size in entries:
            if total + self.reserved + room <= self.target_bytes or now - mtime < self.min_age_s:
                break
            try:
                os.remove(name)
            except OSError:
                continue
            for file_set in sets.get(os.path.abspath(name), ()):
                file_set.discard(name)
                for other in list(file_set):  # the set may name it by another spelling
                    if os.path.abspath(other) == os.path.abspath(name):
                        file_set.discard(other)
            total -= size
            deleted += 1
            freed += size
            emptied.add(Path(name).parent)
        self.folders.remove(emptied)
        return FileTrimResult(deleted, freed, total)


class UploadGate:
    """Pure ASGI middleware: the disk budget enforced when an upload arrives, not only when
    housekeeping next runs. Before Gradio's upload route (`path`) reads a body, room is reserved
    for it (`FileBudget.reserve`: visitors' oldest files go, never the page's own nor a file
    younger than the budget's `min_age_s`; uploads arriving at once each hold their own), and
    released once the upload is written; when there is none, the upload is refused with 507 and
    a sentence, before a byte is written.

    Args:
        app: The ASGI app.
        budget: Gives the app's `FileBudget` (None: no gate yet).
        path: Gradio's upload route.
        max_bytes: What an upload without a Content-Length is taken to need.
    """

    FULL = "The server's space for uploads is full right now; try again in a minute."

    def __init__(self, app: Any, budget: Callable[[], "FileBudget | None"], path: str, max_bytes: int):
        self.app, self.budget, self.path, self.max_bytes = app, budget, path, max_bytes
        self.refused = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") != self.path:
            await self.app(scope, receive, send)
            return
        budget = self.budget()
        size = self.max_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit():
                size = min(int(value), self.max_bytes)
        if budget is None:
            await self.app(scope, receive, send)
            return
        if not await asyncio.to_thread(budget.reserve, size):
            self.refused += 1
            logger.info("upload refused: the file budget is full")
            body = self.FULL.encode()
            await send({"type": "http.response.start", "status": 507,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                    (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})
            return
        try:
            await self.app(scope, receive, send)
        finally:
            budget.release(size)


# ----------------------------------------------------------------------------------- orphaned heartbeats


class OrphanHeartbeats:
    """Cancels Gradio's stream heartbeat tasks of sessions with no pending event on two looks in
    a row (a live stream always has one; the second look rules out a stream that just closed).
    Must run in the server's event loop, where the tasks are.

    Args:
        blocks: The mounted `gr.Blocks` (its queue says which sessions have pending events).
    """

    HEARTBEAT = "queue_data_helper.<locals>.heartbeat"  # the task's coroutine, as gradio.routes names it

    def __init__(self, blocks: Any):
        self.blocks = blocks
        self._seen: set[str] = set()  # sessions whose heartbeat had no pending event last time

    def __call__(self) -> int:
        """Returns how many heartbeat tasks were cancelled."""
        queue = getattr(self.blocks, "_queue", None)
        pending = getattr(queue, "pending_event_ids_session", {})
        messages = getattr(queue, "pending_messages_per_session", None)
        seen_now: set[str] = set()
        cancelled = 0
        for task in asyncio.all_tasks():
            coro = task.get_coro()
            if not getattr(coro, "__qualname__", "").endswith(self.HEARTBEAT):
                continue
            frame = getattr(coro, "cr_frame", None)
            session = frame.f_locals.get("session_hash") if frame is not None else None
            if not isinstance(session, str) or pending.get(session):
                continue
            if session in self._seen:
                task.cancel()
                cancelled += 1
                if messages is not None and session in messages and messages[session].qsize():
                    messages.pop(session, None)  # only heartbeats for nobody are left in it
            else:
                seen_now.add(session)
        self._seen = seen_now
        return cancelled


# ----------------------------------------------------------------------------------- memory


def release_free_memory() -> bool:
    """Hands freed heap pages back to the system (glibc `malloc_trim`). Decoding a burst of big
    photos in worker threads leaves megabytes free but held in per-thread arenas, which RSS (and
    a Space's memory limit) counts until trimmed. False where the C library is not glibc."""
    try:
        return bool(ctypes.CDLL(None).malloc_trim(0))
    except (OSError, AttributeError):  # not glibc
        return False


def map_big_blocks() -> bool:
    """Makes glibc serve every allocation of 1 MB or more with its own mapping, returned to the
    system the moment it is freed. By default the threshold rises to 32 MB after the first big
    free, so decoded photos (Pillow allocates 16 MB blocks) land in per-thread heaps that keep
    their peak. Once per process, at start; False where the C library is not glibc."""
    try:
        return bool(ctypes.CDLL(None).mallopt(-3, 1 << 20))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc
        return False


# ----------------------------------------------------------------------------------- the scheduler


@dataclass(frozen=True)
class Chore:
    """One periodic job for `Housekeeping`.

    Attributes:
        name: What the log calls it.
        run: Does the job; returns a sentence for the log when it did something, else None.
        blocking: File-system or memory work, run in a worker thread; otherwise it runs in the
            server's event loop (where Gradio's sessions and tasks must be touched).
    """

    name: str
    run: Callable[[], str | None]
    blocking: bool = False


class Housekeeping:
    """Runs its chores one after another every `interval_s` seconds, in the server's event loop;
    a chore that fails is logged and the others still run.

    Args:
        chores: The jobs, in the order they run.
        page_watchers: The objects among them that read the mounted page (`.blocks`): they follow
            a page that reload mode swaps in (`follow`).
    """

    def __init__(self, chores: Sequence[Chore], page_watchers: Sequence[Any] = ()):
        self.chores = tuple(chores)
        self.page_watchers = tuple(page_watchers)

    def follow(self, blocks: Any) -> None:
        """Points every chore that reads the page at `blocks` (a page rebuilt in reload mode)."""
        for watcher in self.page_watchers:
            watcher.blocks = blocks

    async def sweep(self) -> dict[str, str | None]:
        """Runs every chore once; returns each one's log sentence (None: nothing to report, or it failed)."""
        said: dict[str, str | None] = {}
        for chore in self.chores:
            try:
                said[chore.name] = await asyncio.to_thread(chore.run) if chore.blocking else chore.run()
            except Exception:  # noqa: BLE001 - one failing chore must not stop the others
                logger.exception("housekeeping: %s failed", chore.name)
                said[chore.name] = None
        if reported := [s for s in said.values() if s]:
            logger.info("housekeeping: %s", "; ".join(reported))
        return said

    async def run(self, interval_s: float) -> None:
        """Sweeps every `interval_s` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            await self.sweep()
