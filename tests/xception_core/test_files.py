"""Atomic writes and per-file locks (`xception_core.files`): a reader sees the old file or the
new one, never a part; a failed write leaves nothing behind; the lock registry keeps nothing."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from xception_core.files import PathLocks, is_temp_file, temp_name, write_atomically, write_bytes_atomically


def test_a_reader_sees_the_old_file_until_the_new_one_is_complete(tmp_path: Path):
    target = tmp_path / "model.json"
    target.write_text("old")
    half_written, may_finish = threading.Event(), threading.Event()
    temps: list[Path] = []

    def write(tmp: Path) -> None:
        temps.append(tmp)
        with open(tmp, "w") as f:
            f.write("new, first half; ")
            f.flush()
            half_written.set()
            may_finish.wait(30)
            f.write("second half")

    writer = threading.Thread(target=write_atomically, args=(target, write))
    writer.start()
    assert half_written.wait(30)
    assert target.read_text() == "old"  # mid-write: the old content, whole
    (tmp,) = temps
    assert tmp.parent == tmp_path and tmp.is_file() and is_temp_file(tmp) and tmp.suffix == ".json"
    may_finish.set()
    writer.join(30)
    assert target.read_text() == "new, first half; second half"
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path: Path):
    target = tmp_path / "head.npz"
    target.write_bytes(b"old")

    def fail(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise RuntimeError("disk full in this test")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomically(target, fail)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["head.npz"]
    assert write_bytes_atomically(tmp_path / "new.bin", b"\x00\x01") == tmp_path / "new.bin"
    assert (tmp_path / "new.bin").read_bytes() == b"\x00\x01"


def test_concurrent_writers_never_share_a_temporary_file(tmp_path: Path):
    target = tmp_path / "x.keras"
    barrier = threading.Barrier(4)
    seen: list[Path] = []

    def write(tmp: Path, text: str) -> None:
        seen.append(tmp)
        barrier.wait(30)  # all four hold their temporary file at once
        tmp.write_text(text)

    threads = [threading.Thread(target=write_atomically, args=(target, lambda tmp, t=str(i): write(tmp, t)))
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(set(seen)) == 4 and target.read_text() in {"0", "1", "2", "3"}
    assert [p.name for p in tmp_path.iterdir()] == ["x.keras"]


def test_temporary_names_are_recognisable_and_keep_the_suffix():
    tmp = temp_name(Path("/cache/exports/xception.keras-0123-4567.keras"))
    assert tmp.parent == Path("/cache/exports") and tmp.name.startswith(".xception.keras-0123-4567.keras.")
    assert tmp.suffix == ".keras" and is_temp_file(tmp) and temp_name(Path("a")) != temp_name(Path("a"))
    for other in ("xception.keras", ".hidden", "model.tmp", ".a.b.tmp.keras", ".a.0123456789ab.tmp.x.y"):
        assert not is_temp_file(other), other


def test_path_locks_exclude_per_path_and_keep_nothing_afterwards(tmp_path: Path):
    locks = PathLocks()
    inside, entered = threading.Event(), threading.Event()
    release = threading.Event()

    def hold_a() -> None:
        with locks.hold(tmp_path / "a"):
            inside.set()
            release.wait(30)

    holder = threading.Thread(target=hold_a)
    holder.start()
    assert inside.wait(30)
    with locks.hold(tmp_path / "b"):  # another path: no wait
        assert len(locks) == 2

    def second() -> None:
        with locks.hold(tmp_path / "sub" / ".." / "a"):  # the same file by another spelling
            entered.set()

    waiter = threading.Thread(target=second)
    waiter.start()
    assert not entered.wait(0.2), "a second holder of the same path must wait"
    release.set()
    holder.join(30)
    waiter.join(30)
    assert entered.is_set()
    for i in range(100):
        with locks.hold(tmp_path / f"file{i}"):
            pass
    assert len(locks) == 0
