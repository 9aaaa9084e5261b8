"""The repository deploys as it is: what a Space receives (the tracked tree) holds no file the
Hugging Face Hub refuses without LFS (over 10 MiB), and no file over the project's own bound of
5 MB (the app fetches or builds its large files at start: design.md §5)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT_LIMIT = 5_000_000  # bytes: a file this big belongs in a download, not in git
HUB_LIMIT = 10 * 2**20  # bytes: the Hub refuses a pushed file over 10 MiB that is not in LFS/Xet


def tracked_sizes(root: Path = ROOT) -> dict[str, int]:
    """{path: size in bytes} of every file in git's index (what the next commit holds), read from
    the blobs themselves, so an added file counts even before it is committed."""
    listing = subprocess.run(["git", "ls-files", "-s", "-z"], cwd=root, capture_output=True, check=True).stdout
    entries = [line.split(b"\t", 1) for line in listing.split(b"\0") if line]
    blobs = [(meta.split()[1], path.decode()) for meta, path in entries if meta.split()[0] != b"160000"]  # no submodules
    answer = subprocess.run(["git", "cat-file", "--batch-check=%(objectsize)"], cwd=root, check=True,
                            input=b"".join(sha + b"\n" for sha, _ in blobs), capture_output=True).stdout
    return {path: int(size) for (_, path), size in zip(blobs, answer.split())}


def too_big(sizes: dict[str, int], limit: int) -> dict[str, int]:
    return {path: size for path, size in sorted(sizes.items()) if size > limit}


@pytest.fixture(scope="module")
def sizes() -> dict[str, int]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing tracked to check")
    return tracked_sizes()


def test_no_tracked_file_is_over_the_projects_bound(sizes):
    assert sizes, "git lists no tracked file"
    assert not too_big(sizes, PROJECT_LIMIT), f"tracked files over {PROJECT_LIMIT:,} bytes: {too_big(sizes, PROJECT_LIMIT)}"


def test_a_space_takes_every_tracked_file_without_lfs(sizes):
    assert not too_big(sizes, HUB_LIMIT), (
        f"the Hub refuses these files without LFS (over {HUB_LIMIT:,} bytes): {too_big(sizes, HUB_LIMIT)}")


def test_the_check_sees_a_big_file(tmp_path):
    """On a repository of its own: a file over the bound is found by its staged blob."""
    if shutil.which("git") is None:
        pytest.skip("no git")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "small.txt").write_text("small")
    (tmp_path / "big.bin").write_bytes(b"\0" * (PROJECT_LIMIT + 1))
    subprocess.run(["git", "add", "small.txt", "big.bin"], cwd=tmp_path, check=True)
    sizes = tracked_sizes(tmp_path)
    assert sizes == {"big.bin": PROJECT_LIMIT + 1, "small.txt": 5}
    assert too_big(sizes, PROJECT_LIMIT) == {"big.bin": PROJECT_LIMIT + 1}
