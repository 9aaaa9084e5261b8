"""Budgets every request, session and file is held to, beyond what Gradio enforces itself.

- `BodyLimitMiddleware`: one request-body limit on every route. Gradio caps multipart uploads
  (`max_file_size`) but reads any JSON body whole (`queue/join`, `call/<api>`, `run/predict`),
  so a `{"url": "data:..."}` payload could be of any size.
- `Janitor`: a periodic sweep that (a) drops whole sessions idle for longer than `session_ttl_s`
  (Gradio keeps a session, ~220 KB of page config plus its state, until 10,000 newer ones
  push it out), (b) drops each session's page-config snapshot (`SessionState.config_values`:
  a copy of every component's config, ~220 KB, plus each event's raw inputs, so a data URL
  stays there otherwise). Gradio reads that snapshot only to serve deep links, which this app
  does not offer; what an event needs (State values, updated components) is kept. And
  (c) keeps the files Gradio wrote (uploads, generated images) under a byte budget, oldest first,
  on top of Gradio's age-based `delete_cache`, (d) returns freed heap memory to the system, and
  (e) stops Gradio's per-stream heartbeat tasks whose client hung up before the stream's end:
  Gradio cancels a stream's heartbeat only after sending `close_stream`, so a client that
  disconnects right after its result leaves a task that wakes every 15 s for the life of the
  process and keeps queueing heartbeats for nobody (one task and a growing queue per such call).

Gradio internals used (gradio 6.31): `StateHolder.session_data`, `.time_last_used`, `.lock`,
`.delete_state`; `SessionState.config_values`; `Blocks.temp_file_sets`, component
`keep_in_cache` (examples, which must survive). The tests in tests/demo/test_limits.py fail
if these move.
"""

from __future__ import annotations

import asyncio
import ctypes
import datetime
import logging
import os
from collections.abc import Callable
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


# ----------------------------------------------------------------------------------- sessions and files


@dataclass
class SweepResult:
    """What one sweep removed."""

    sessions_expired: int = 0
    configs_dropped: int = 0
    files_deleted: int = 0
    bytes_freed: int = 0


class Janitor:
    """Keeps Gradio's per-session memory and its files bounded; see the module docstring.

    Args:
        blocks: The mounted `gr.Blocks` (its `state_holder` exists once mounted).
        session_ttl_s: Sessions not used for this long are dropped.
        settle_s: A session's page-config snapshot is dropped once it has not been used for this
            long (its event is over).
        files_budget_bytes: Most bytes of Gradio-written files kept; oldest go first.
        file_min_age_s: Files younger than this are never deleted (an upload about to be used).
    """

    def __init__(self, blocks: Any, *, session_ttl_s: float, files_budget_bytes: int, file_min_age_s: float,
                 upload_dir: Path, settle_s: float = 2.0):
        self.blocks = blocks
        self.session_ttl_s = session_ttl_s
        self.settle_s = settle_s
        self.files_budget_bytes = files_budget_bytes
        self.file_min_age_s = file_min_age_s
        self.upload_dir = Path(upload_dir)
        self._orphans_seen: set[str] = set()

    # ------------------------------------------------------------------ sessions

    def sweep_sessions(self, now: datetime.datetime | None = None) -> SweepResult:
        """Expire idle sessions and drop the others' page-config snapshots once their events are over."""
        holder = getattr(self.blocks, "state_holder", None)
        result = SweepResult()
        if holder is None:
            return result
        now = now or datetime.datetime.now()
        ttl = datetime.timedelta(seconds=self.session_ttl_s)
        settle = datetime.timedelta(seconds=self.settle_s)
        for session_id in list(holder.session_data):
            last = holder.time_last_used.get(session_id)
            if last is not None and now - last > ttl:
                holder.delete_state(session_id)  # runs gr.State delete callbacks
                with holder.lock:
                    holder.session_data.pop(session_id, None)
                    holder.time_last_used.pop(session_id, None)
                result.sessions_expired += 1
                continue
            session = holder.session_data.get(session_id)
            if session is None or not session.config_values or (last is not None and now - last < settle):
                continue
            session.config_values.clear()  # Gradio re-adds the entries a later event touches
            result.configs_dropped += 1
        return result

    # ------------------------------------------------------------------ files

    def trim_files(self, now: float | None = None) -> SweepResult:
        """Delete the oldest Gradio-written files until they fit `files_budget_bytes`
        (examples, which Gradio marks keep-in-cache, are never deleted), then empty folders."""
        import time

        result = SweepResult()
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
        folders: set[Path] = set()
        for mtime, name, size, file_set in entries:
            if total <= self.files_budget_bytes or now - mtime < self.file_min_age_s:
                break
            try:
                os.remove(name)
            except OSError:
                continue
            file_set.discard(name)
            total -= size
            result.files_deleted += 1
            result.bytes_freed += size
            folders.add(Path(name).parent)
        self._remove_empty_folders(folders)
        return result

    def _remove_empty_folders(self, folders: set[Path], min_age_s: float = 0.0) -> None:
        """Gradio stores each file in a folder named by its hash and never removes the folder."""
        import time

        root = self.upload_dir.resolve()
        for folder in folders:
            try:
                resolved = folder.resolve()
                if (resolved != root and resolved.is_relative_to(root) and time.time() - folder.stat().st_mtime >= min_age_s
                        and not any(folder.iterdir())):
                    folder.rmdir()
            except OSError:
                pass

    def sweep_empty_folders(self) -> None:
        """Remove empty per-file folders left by Gradio's own age-based deletion."""
        try:
            folders = {p for p in self.upload_dir.iterdir() if p.is_dir()}
        except OSError:
            return
        # Only folders left alone for a while: one just made is about to receive its file.
        self._remove_empty_folders(folders, self.file_min_age_s)

    # ------------------------------------------------------------------ orphaned heartbeats

    def stop_orphan_heartbeats(self) -> int:
        """Cancels heartbeat tasks of sessions with no pending event on two sweeps in a row (a
        live stream always has one; the second look rules out a stream that just closed).
        Must run in the server's event loop. Returns how many were cancelled."""
        queue = getattr(self.blocks, "_queue", None)
        pending = getattr(queue, "pending_event_ids_session", {})
        messages = getattr(queue, "pending_messages_per_session", None)
        seen_now: set[str] = set()
        cancelled = 0
        for task in asyncio.all_tasks():
            coro = task.get_coro()
            if not getattr(coro, "__qualname__", "").endswith("queue_data_helper.<locals>.heartbeat"):
                continue
            frame = getattr(coro, "cr_frame", None)
            session = frame.f_locals.get("session_hash") if frame is not None else None
            if not isinstance(session, str) or pending.get(session):
                continue
            if session in self._orphans_seen:
                task.cancel()
                cancelled += 1
                if messages is not None and session in messages and messages[session].qsize():
                    messages.pop(session, None)  # only heartbeats for nobody are left in it
            else:
                seen_now.add(session)
        self._orphans_seen = seen_now
        return cancelled

    # ------------------------------------------------------------------ memory

    @staticmethod
    def release_free_memory() -> bool:
        """Hands freed heap pages back to the system (glibc `malloc_trim`). Decoding a burst of
        big photos in worker threads leaves megabytes free but held in per-thread arenas, which
        RSS (and a Space's memory limit) counts until trimmed."""
        try:
            return bool(ctypes.CDLL(None).malloc_trim(0))
        except (OSError, AttributeError):  # not glibc
            return False

    @staticmethod
    def map_big_blocks() -> bool:
        """Makes glibc serve every allocation of 1 MB or more with its own mapping, returned to the
        system the moment it is freed. By default the threshold rises to 32 MB after the first big
        free, so decoded photos (Pillow allocates 16 MB blocks) land in per-thread heaps that
        keep their peak: 8 threads that each decoded one 50 MP PNG once hold ~1.2 GB between bursts."""
        try:
            return bool(ctypes.CDLL(None).mallopt(-3, 1 << 20))  # M_MMAP_THRESHOLD
        except (OSError, AttributeError):  # not glibc
            return False

    # ------------------------------------------------------------------ the loop

    async def run(self, interval_s: float) -> None:
        """Sweeps every `interval_s` seconds until cancelled (sessions in the event loop, where
        Gradio touches them; files in a worker thread)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                sessions = self.sweep_sessions()
                orphans = self.stop_orphan_heartbeats()
                files = await asyncio.to_thread(self.trim_files)
                await asyncio.to_thread(self.sweep_empty_folders)
                await asyncio.to_thread(self.release_free_memory)
                if sessions.sessions_expired or files.files_deleted or orphans:
                    logger.info("janitor: %d idle sessions expired, %d page configs dropped, %d files (%.1f MB) "
                                "deleted, %d orphaned heartbeats stopped", sessions.sessions_expired,
                                sessions.configs_dropped, files.files_deleted, files.bytes_freed / 2**20, orphans)
            except Exception:  # noqa: BLE001 - the sweep must outlive any one failure
                logger.exception("janitor sweep failed")
