"""`python -m xception_core`: help and usage mistakes answer at once, in one line, without
TensorFlow (its import takes seconds and prints start-up lines)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xception_core", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_an_unknown_preset_is_one_clear_line_and_exit_code_2():
    done = run("fetch", "bogus", "imagenet")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "python -m xception_core fetch: unknown preset 'bogus'; choose from imagenet, kitchenware, inception_v3_imagenet."]


def test_help_does_not_import_tensorflow():
    probe = ("import sys; from xception_core.__main__ import main\n"
             "try:\n    main(['fetch', '--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
             "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--allow-missing" in done.stdout and done.stdout.strip().endswith("False False")
    assert done.stderr == ""  # no TensorFlow start-up lines
