"""Holds N GiB of memory beside a command, as a browser and an IDE hold it on a contributor's
laptop: the way to check that the tests pass on a machine whose memory is mostly taken.

    python -m bench.hog 10 -- .venv/bin/python -m pytest tests/scale    # the command beside 10 GiB
    python -m bench.hog 3                                               # hold 3 GiB until Ctrl-C

Every page is written (resident, not only reserved), in chunks of 256 MiB, before the command
starts; the memory is let go when the command ends, and the exit status is the command's.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time

import numpy as np

CHUNK = 256 * 2**20


def hold(gib: float) -> list[np.ndarray]:
    """`gib` GiB in resident chunks (np.ones writes every page)."""
    left, chunks = int(gib * 2**30), []
    while left > 0:
        chunks.append(np.ones(min(CHUNK, left), np.uint8))
        left -= chunks[-1].nbytes
    return chunks


def resident_gib() -> float:
    with open("/proc/self/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return kib / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("gib", type=float, help="GiB to hold")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- and the command to run beside it")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    started = time.monotonic()
    chunks = hold(args.gib)
    print(f"bench.hog: holding {resident_gib():.1f} GiB resident (filled in {time.monotonic() - started:.1f} s)",
          file=sys.stderr, flush=True)
    try:
        if not command:
            signal.pause() if hasattr(signal, "pause") else time.sleep(10**9)
            return 0
        started = time.monotonic()
        code = subprocess.call(command)
        print(f"bench.hog: the command exited with {code} after {time.monotonic() - started:.0f} s beside "
              f"{args.gib:g} GiB", file=sys.stderr, flush=True)
        return code
    except KeyboardInterrupt:
        return 130
    finally:
        chunks.clear()


if __name__ == "__main__":
    sys.exit(main())
