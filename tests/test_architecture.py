"""The layering the project promises: xception_core never imports UI libraries, demo/ never
does model math with TensorFlow directly, and the light modules do not pull TensorFlow in."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", sorted((ROOT / "xception_core").glob("*.py")), ids=lambda p: p.name)
def test_core_imports_no_ui_library(path):
    assert not imported_roots(path) & {"gradio", "plotly", "fastapi", "uvicorn", "starlette"}


@pytest.mark.parametrize("path", sorted((ROOT / "demo").glob("*.py")), ids=lambda p: p.name)
def test_demo_does_no_model_math(path):
    assert not imported_roots(path) & {"tensorflow", "keras"}


@pytest.mark.parametrize("name", ["preprocessing", "labels", "assets", "visualize", "spec", "presets"])
def test_light_modules_do_not_import_tensorflow(name):
    assert not imported_roots(ROOT / "xception_core" / f"{name}.py") & {"tensorflow", "keras", "gradio", "plotly"}
