"""Budgets every request, session and file is held to, beyond what Gradio enforces itself.

- `BodyLimitMiddleware`: one request-body limit on every route. Gradio caps multipart uploads
  (`max_file_size`) but reads any JSON body whole (`queue/join`, `call/<api>`, `run/predict`),
  so a `{"url": "data:..."}` payload could be of any size.
- Chores, each with one job, that `Housekeeping` runs every few seconds:
  - `SessionSweep` drops whole sessions idle for longer than a TTL (Gradio keeps a session,
    ~220 KB of page config plus its state, until 10,000 newer ones push it out), and drops each
    session's page-config snapshot (`SessionState.config_values`: a copy of every component's
    config, ~220 KB, plus each event's raw inputs, so a data URL stays there otherwise). Gradio
    reads that snapshot only to serve deep links, which this app does not offer; what an event
    needs (State values, updated components) is kept.
  - `FileBudget` keeps the files Gradio wrote (uploads, generated images) under a byte budget,
    oldest first, on top of Gradio's age-based `delete_cache`.
  - `EmptyFolders` removes the per-file folders Gradio leaves behind once their file is gone.
  - `OrphanHeartbeats` stops Gradio's per-stream heartbeat tasks left behind by a stream that
    cannot end: a client that stops reading during a large result (a phone that lost its network
    keeps its TCP connection open for minutes) leaves the stream waiting for the socket to drain
    after its event is over, and its heartbeat task queueing a message every 15 s that nobody
    reads, for as long as the connection stays open.
  - `release_free_memory` returns freed heap memory to the system; `map_big_blocks` (once, at
    start) makes big allocations go back to it at once.

Gradio internals used (gradio 6.31): `StateHolder.session_data`, `.time_last_used`, `.lock`,
`.delete_state`; `SessionState.config_values`; `Blocks.temp_file_sets`, component
`keep_in_cache` (examples, which must survive); the queue's `pending_event_ids_session` and
`pending_messages_per_session`, and the heartbeat task of `queue_data_helper`. The tests in
tests/demo/test_limits.py fail if these move.
"""

from __future__ import annotations

import asyncio
import ctypes
import datetime
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------- request bodies


class BodyLimitMiddleware:
    """Pure ASGI middleware: any HTTP request whose body exceeds `max_bytes` gets 413.

    A declared Content-Length over the limit is refused before a byte is read. A body without
    one (chunked) is counted as it arrives; once past the limit the app sees the body end and
    whatever it answers is replaced by the 413.

    Refusals are plain text, except where `answer(path, status, message)` returns
    `(content_type, body)` for the request's path (an API whose errors have a declared shape).
    """

    def __init__(self, app: Any, max_bytes: int,
                 answer: Callable[[str, int, str], tuple[str, bytes] | None] | None = None):
        self.app, self.max_bytes, self.answer = app, int(max_bytes), answer

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await self._refuse(scope, send, 400, "Invalid Content-Length header.")
                    return
                if declared > self.max_bytes:
                    await self._refuse(scope, send, 413, self.message)
                    return
        received = 0
        exceeded = False

        async def counted_receive():
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if not exceeded:
                await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded:
            await self._refuse(scope, send, 413, self.message)

    async def _refuse(self, scope, send, status: int, text: str) -> None:
        shaped = self.answer(scope.get("path", ""), status, text) if self.answer else None
        content_type, body = shaped or ("text/plain; charset=utf-8", text.encode())
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type.encode()),
                                (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    @property
    def message(self) -> str:
        return f"Request body too large: at most {self.max_bytes / 2**20:.1f} MB is accepted."


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
    """

    def __init__(self, upload_dir: Path, min_age_s: float):
        self.upload_dir, self.min_age_s = Path(upload_dir), min_age_s

    def remove(self, folders: set[Path], min_age_s: float = 0.0) -> None:
        """Removes those of `folders` that are empty, inside the upload folder, and at least
        `min_age_s` old."""
        root = self.upload_dir.resolve()
        for folder in folders:
            try:
                resolved = folder.resolve()
                inside = resolved != root and resolved.is_relative_to(root)
                if inside and time.time() - folder.stat().st_mtime >= min_age_s and not any(folder.iterdir()):
                    folder.rmdir()
            except OSError:
                pass

    def sweep(self) -> None:
        """Every empty folder directly under the upload folder, left alone for `min_age_s`
        (those left by Gradio's own age-based deletion)."""
        try:
            folders = {p for p in self.upload_dir.iterdir() if p.is_dir()}
        except OSError:
            return
        self.remove(folders, self.min_age_s)


@dataclass(frozen=True)
class FileTrimResult:
    """What one trim of Gradio's files deleted."""

    files_deleted: int = 0
    bytes_freed: int = 0

    def summary(self) -> str | None:
        if not self.files_deleted:
            return None
        return f"{self.files_deleted} files ({self.bytes_freed / 2**20:.1f} MB) deleted"


class FileBudget:
    """Keeps the files Gradio wrote (uploads, generated images) under a byte budget: the oldest
    go first, examples (which Gradio marks keep-in-cache) never, and their emptied folders with
    them. Blocking file-system work: run it in a worker thread.

    Args:
        blocks: The mounted `gr.Blocks` (its `temp_file_sets` list what Gradio wrote).
        budget_bytes: Most bytes of Gradio-written files kept.
        min_age_s: Files younger than this are never deleted (an upload about to be used).
        folders: Removes the folders emptied by a trim.
    """

    def __init__(self, blocks: Any, *, budget_bytes: int, min_age_s: float, folders: EmptyFolders):
        self.blocks, self.budget_bytes, self.min_age_s, self.folders = blocks, budget_bytes, min_age_s, folders

    def __call__(self, now: float | None = None) -> FileTrimResult:
        now = time.time() if now is None else now
        keep: set[str] = set()
        for component in list(self.blocks.blocks.values()):
            keep.update(getattr(component, "keep_in_cache", ()))
        entries: list[tuple[float, str, int, set]] = []
        total = 0
        for file_set in list(self.blocks.temp_file_sets):
            for name in list(file_set):
                try:
                    stat = os.lstat(name)
                except OSError:
                    file_set.discard(name)
                    continue
                total += stat.st_size
                if name not in keep:
                    entries.append((stat.st_mtime, name, stat.st_size, file_set))
        entries.sort()
        deleted = freed = 0
        emptied: set[Path] = set()
        for mtime, name, size, file_set in entries:
            if total <= self.budget_bytes or now - mtime < self.min_age_s:
                break
            try:
                os.remove(name)
            except OSError:
                continue
            file_set.discard(name)
            total -= size
            deleted += 1
            freed += size
            emptied.add(Path(name).parent)
        self.folders.remove(emptied)
        return FileTrimResult(deleted, freed)


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
