"""The layering the project promises, checked on the source itself:

    xception_core.settings → xception_core.arch → xception_core.weights → xception_core.model → xception_core.runtime
    → xception_core.io → demo.store → demo.services / demo.netron → demo.ui → demo.server
    → scale (Ray Serve: the model deployment and the ingress around demo.server)

Each module imports only its own layer or lower ones (function-level imports included, so a lazy
import cannot hide a cycle); there are no import cycles; the core imports no UI or web library,
reads no environment outside `xception_core.settings` and writes no page markup; the app layer does no
model math (no TensorFlow or Keras); services hold no Gradio.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("xception_core", "demo", "bench", "scale")

# Lower rank = lower layer. A module may import modules of its own rank or lower.
RANKS = [
    ("xception_core.settings", 0),
    ("xception_core.arch", 1),
    ("xception_core.weights", 2),
    ("xception_core.model", 3),
    ("xception_core.runtime", 4),
    ("xception_core.io", 5),
    ("xception_core.__main__", 5),
    ("demo.errors", 6),  # what a client may be told: used by the store and everything above
    ("demo.fonts", 6),  # the fonts the page, its figures and Netron use, and their route
    ("demo.store", 6),
    ("demo.services", 7),
    ("demo.netron", 7),
    ("demo.ui", 8),
    ("demo.server", 9),
    ("demo", 9),
    ("bench", 10),
    ("scale", 10),
]
UI_LIBRARIES = {"gradio", "gradio_client", "plotly", "fastapi", "starlette", "uvicorn", "pandas"}
MODEL_MATH = {"tensorflow", "keras"}
LIGHT = ["xception_core/settings.py", "xception_core/arch/spec.py", "xception_core/weights/presets.py", "xception_core/io/images.py",
         "xception_core/io/preprocessing.py", "xception_core/io/labels.py", "xception_core/io/assets.py", "xception_core/io/visualize.py"]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports(path: Path) -> set[str]:
    """Every module name imported anywhere in the file (absolute imports; relative ones resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own = module_name(path)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = own.split(".")[: -node.level + (1 if path.name == "__init__.py" else 0) or None]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return names


def project_imports(path: Path, known: dict[str, Path]) -> set[str]:
    return {name for name in imports(path) if name in known and name != module_name(path)}


def rank(module: str) -> int:
    best = max((prefix for prefix, _ in RANKS if module == prefix or module.startswith(prefix + ".")), key=len)
    return dict(RANKS)[best]


KNOWN = sources()


@pytest.mark.parametrize("module", sorted(KNOWN))
def test_imports_go_only_downward(module):
    if module in ("xception_core", "demo", "bench"):
        return  # package roots re-export lazily and import nothing of the project at import time
    upward = {m for m in project_imports(KNOWN[module], KNOWN) if m not in PACKAGES and rank(m) > rank(module)}
    assert not upward, f"{module} (layer {rank(module)}) imports higher layers: {sorted(upward)}"


def test_no_import_cycles():
    graph = {m: project_imports(p, KNOWN) - set(PACKAGES) for m, p in KNOWN.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " → ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


@pytest.mark.parametrize("module", sorted(m for m in KNOWN if m.startswith("xception_core")))
def test_core_imports_no_ui_library_and_reads_no_environment(module):
    path = KNOWN[module]
    roots = {name.split(".")[0] for name in imports(path)}
    assert not roots & UI_LIBRARIES, f"{module} imports {sorted(roots & UI_LIBRARIES)}"
    if module != "xception_core.settings":
        text = path.read_text(encoding="utf-8")
        assert "os.environ" not in text and "getenv" not in text, f"{module} reads the environment"


@pytest.mark.parametrize("module", sorted(m for m in KNOWN if m.startswith("xception_core")))
def test_core_writes_no_page_markup(module):
    """Strings in the core (docstrings aside) hold no Markdown emphasis or HTML: words for pages are
    made in demo.ui.text."""
    tree = ast.parse(KNOWN[module].read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            assert "**" not in node.value and "<br" not in node.value and "<b>" not in node.value, (module, node.value)


@pytest.mark.parametrize("module", sorted(m for m in KNOWN if m.startswith("demo")))
def test_app_does_no_model_math(module):
    roots = {name.split(".")[0] for name in imports(KNOWN[module])}
    assert not roots & MODEL_MATH, f"{module} imports {sorted(roots & MODEL_MATH)}"


@pytest.mark.parametrize("module", sorted(m for m in KNOWN if m == "demo.store" or m.startswith("demo.services")))
def test_services_hold_no_gradio(module):
    roots = {name.split(".")[0] for name in imports(KNOWN[module])}
    assert not roots & UI_LIBRARIES, f"{module} imports {sorted(roots & UI_LIBRARIES)}"


@pytest.mark.parametrize("path", LIGHT)
def test_light_modules_do_not_import_tensorflow(path):
    roots = {name.split(".")[0] for name in imports(ROOT / path)}
    assert not roots & (MODEL_MATH | UI_LIBRARIES)


def test_the_checks_see_a_violation(tmp_path):
    """The import reader finds function-level and relative imports (so the rules above can fail)."""
    sample = ROOT / "xception_core" / "arch" / "_probe_for_test.py"
    sample.write_text("def f():\n    from xception_core.model import load_model\n    import gradio\n")
    try:
        found = imports(sample)
        assert "xception_core.model" in found and "gradio" in found
        assert rank("xception_core.model") > rank(module_name(sample))
    finally:
        sample.unlink()
