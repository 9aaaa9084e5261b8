"""The layering the project promises, checked on the source itself:

    xception_core.settings → xception_core.arch / xception_core.inputs → xception_core.weights → xception_core.model
    → xception_core.runtime → xception_core.io → demo.store → demo.services / demo.netron / demo.http_api → demo.ui → demo.server
    → app.py, bench, scale (Ray Serve: the model deployment and the ingress around demo.server)

Every module of the project has a rank (a new module gets one here, or this test fails); each
imports only its own rank or lower ones (function-level imports included, so a lazy import cannot
hide a cycle); there are no import cycles; the core imports no UI or web library, reads no
environment outside `xception_core.settings` and writes no page markup; the app layer does no model
math: no TensorFlow or Keras in its own files, and through the project modules it imports, at any
depth, only the core modules named in `TENSORFLOW_DEBT`; services hold no Gradio.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("xception_core", "demo", "bench", "scale")
ENTRY_POINTS = ("app.py",)

# Lower rank = lower layer. A module may import modules of its own rank or lower.
# Folders that are one layer each: every module inside has the folder's rank.
LAYER_FOLDERS = {
    "xception_core.arch": 1,
    "xception_core.inputs": 1,  # decoding and preprocessing: below what runs a model, beside the architecture
    "xception_core.weights": 2,
    "xception_core.runtime": 4,
    "xception_core.io": 5,  # labels, assets, pictures, exports: above the runtime
    "demo.services": 7,
    "demo.netron": 7,
    "demo.ui": 8,
    "bench": 10,
    "scale": 10,
}
# Modules beside those folders, each ranked by name (no prefix: a new one must be added here).
MODULE_RANKS = {
    "xception_core.settings": 0,
    "xception_core.files": 0,  # atomic writes and per-file locks: any layer writes files
    "xception_core.model": 3,
    "xception_core": 5,  # the package's lazy re-exports of the core's main names
    "xception_core.__main__": 5,
    "demo": 6,  # empty package root
    "demo.errors": 6,  # what a client may be told: used by the store and everything above
    "demo.fonts": 6,  # the fonts the page, its figures and Netron use, and their route
    "demo.log_filter": 0,  # a stderr filter app.py installs before anything else; imports nothing of ours
    "demo.store": 6,  # the store's rooms, re-exported under the names the app imports
    "demo.store.interface": 6,  # the store's interface and keys
    "demo.store.cache": 6,  # the translation cache and its int8 graph
    "demo.store.served": 6,  # the served model of this process, from the translation
    "demo.store.local": 6,  # the store of this process: background loading, slots
    "demo.store.compared": 6,  # Inception V3 for the Compare view, prepared on first need
    "demo.store_remote": 6,  # the store's interface over Ray Serve replicas
    "demo.http_api": 7,  # plain HTTP routes over the store, beside the services and Netron's routes
    "demo.limits": 9,  # the server's request-body limit and janitor
    "demo.ports": 9,  # the server's port check (app.py runs it before the weights load)
    "demo.runs": 6,  # each process's own folder, and the sweep of ended processes' folders
    "demo.reload": 9,  # Gradio's reload mode around the server's app
    "demo.server": 9,
    "app": 10,  # the entry point: the top
}
UI_LIBRARIES = {"gradio", "gradio_client", "plotly", "fastapi", "starlette", "uvicorn", "pandas"}
MODEL_MATH = {"tensorflow", "keras"}
# The core modules that import TensorFlow or Keras and that the app layer (demo, app.py) still
# reaches through its project imports, lazily: the features that need TensorFlow (the first
# translation of new weights, Teach's .keras export, a Grad-CAM of a head that is not dense
# layers, backend 'tf'). Anything beyond it fails; an entry that is no longer reached or no longer imports them
# fails too, so the list only shrinks. At import time the app reaches none of them
# (`test_serving_imports_no_tensorflow_at_import_time`): serving answers without TensorFlow.
TENSORFLOW_DEBT = {
    "xception_core.arch.builder",  # the Keras layers the model is built from
    "xception_core.weights.load",  # weights into the Keras model
    "xception_core.model",  # the one factory: a Keras model
    "xception_core.runtime.classifier",  # TensorFlow forward and Grad-CAM's GradientTape
    "xception_core.runtime.extractor",  # Teach's features (TensorFlow fallback)
    "xception_core.runtime.activations",  # all-blocks pass (TensorFlow fallback)
    "xception_core.runtime.forward",  # the TensorFlow forward beside the ONNX one
    "xception_core.runtime.folding",  # BatchNorm folding reads Keras layers
    "xception_core.runtime.introspection",  # block table from the Keras graph
    "xception_core.runtime.onnx",  # the ONNX translation reads Keras layers
    "xception_core.io.export",  # .keras and graph exports for Netron and downloads
}
LIGHT = ["xception_core/settings.py", "xception_core/arch/spec.py", "xception_core/arch/nodes.py",
         "xception_core/arch/registry.py", "xception_core/arch/names.py", "xception_core/weights/presets.py", "xception_core/inputs/images.py",
         "xception_core/inputs/preprocessing.py", "xception_core/io/labels.py", "xception_core/io/assets.py", "xception_core/io/visualize.py",
         "xception_core/files.py",
         "xception_core/arch/graph.py", "xception_core/arch/receptive.py", "xception_core/arch/cost.py",
         "xception_core/runtime/operation.py", "xception_core/runtime/patches.py"]


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources(root: Path = ROOT) -> dict[str, Path]:
    found = {module_name(p, root): p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))}
    found.update({module_name(root / entry, root): root / entry for entry in ENTRY_POINTS if (root / entry).is_file()})
    return found


@functools.cache
def source_text(path: Path) -> str:
    """The file's text, read once per session (every check reads the same files)."""
    return path.read_text(encoding="utf-8")


@functools.cache
def parsed(path: Path) -> ast.Module:
    """The file's syntax tree, parsed once per session: the checks only read it."""
    return ast.parse(source_text(path))


@functools.cache
def imports(path: Path, root: Path = ROOT) -> frozenset[str]:
    """Every module name imported anywhere in the file (absolute imports; relative ones resolved)."""
    tree = parsed(path)
    own = module_name(path, root)
    names: set[str] = set()
    for node in ast.walk(tree):
        names.update(_imported(node, own, path))
    return frozenset(names)


def _imported(node: ast.AST, own: str, path: Path) -> set[str]:
    """The module names one statement imports (none if it is not an import)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    if not isinstance(node, ast.ImportFrom):
        return set()
    if node.level:
        base = own.split(".")[: -node.level + (1 if path.name == "__init__.py" else 0) or None]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    return {module} | {f"{module}.{alias.name}" for alias in node.names}  # `from pkg import module`


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (getattr(test, "id", None) == "TYPE_CHECKING"
                                         or getattr(test, "attr", None) == "TYPE_CHECKING")


@functools.cache
def import_time_imports(path: Path, root: Path = ROOT) -> frozenset[str]:
    """The module names the file imports when it is imported: module-level statements only (not
    inside functions or classes' methods, not under `if TYPE_CHECKING:`)."""
    own = module_name(path, root)
    tree = parsed(path)
    names: set[str] = set()
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) or _is_type_checking(node):
            continue
        if isinstance(node, ast.ClassDef):
            todo.extend(n for n in node.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update(_imported(node, own, path))
        else:
            todo.extend(ast.iter_child_nodes(node))
    return frozenset(names)


def tensorflow_at_import(module: str, known: dict[str, Path], root: Path = ROOT) -> dict[str, list[str]]:
    """{project module: the chain of import-time imports from `module` to it} for every module
    that importing `module` imports and that imports TensorFlow or Keras at its own import time."""
    chains = {module: [module]}
    todo = [module]
    found: dict[str, list[str]] = {}
    while todo:
        current = todo.pop()
        names = import_time_imports(known[current], root)
        if {name.split(".")[0] for name in names} & MODEL_MATH:
            found[current] = chains[current]
        for name in names:
            if name in known and name not in chains and name not in PACKAGES:
                chains[name] = chains[current] + [name]
                todo.append(name)
            elif name.rsplit(".", 1)[0] in known and name.rsplit(".", 1)[0] not in chains:
                parent = name.rsplit(".", 1)[0]
                if parent not in PACKAGES:
                    chains[parent] = chains[current] + [parent]
                    todo.append(parent)
    return found


def project_imports(path: Path, known: dict[str, Path], root: Path = ROOT) -> set[str]:
    """The project modules the file imports (package roots left out: they import nothing)."""
    own = module_name(path, root)
    return {name for name in imports(path, root) if name in known and name != own and name not in PACKAGES}


def rank(module: str) -> int:
    """The module's layer; KeyError for a module that has none."""
    if module in MODULE_RANKS:
        return MODULE_RANKS[module]
    parts = module.split(".")
    for cut in range(len(parts), 0, -1):  # the innermost layer folder holding it
        if (folder := ".".join(parts[:cut])) in LAYER_FOLDERS:
            return LAYER_FOLDERS[folder]
    raise KeyError(f"{module} has no rank: add it to MODULE_RANKS or put it in a layer folder")


def reachable(module: str, known: dict[str, Path], root: Path = ROOT) -> set[str]:
    """Every project module `module` imports, directly or through others, at any depth."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        for name in project_imports(known[todo.pop()], known, root) - seen:
            seen.add(name)
            todo.append(name)
    return seen


def model_math_reached(module: str, known: dict[str, Path], root: Path = ROOT) -> set[str]:
    """The project modules that `module` reaches and that import TensorFlow or Keras themselves."""
    return {m for m in reachable(module, known, root)
            if {name.split(".")[0] for name in imports(known[m], root)} & MODEL_MATH}


KNOWN = sources()
APP_LAYER = sorted(m for m in KNOWN if m == "app" or m == "demo" or m.startswith("demo."))


def test_every_module_has_a_rank():
    unranked = []
    for module in sorted(KNOWN):
        try:
            rank(module)
        except KeyError:
            unranked.append(module)
    assert not unranked, f"modules without a rank (add them to MODULE_RANKS): {unranked}"
    assert "app" in KNOWN and rank("app") == max(MODULE_RANKS.values()), "app.py is the top"


@pytest.mark.parametrize("module", sorted(KNOWN))
def test_imports_go_only_downward(module):
    upward = {m for m in project_imports(KNOWN[module], KNOWN) if rank(m) > rank(module)}
    assert not upward, f"{module} (layer {rank(module)}) imports higher layers: {sorted(upward)}"


def test_no_import_cycles():
    graph = {m: project_imports(p, KNOWN) for m, p in KNOWN.items()}
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
        text = source_text(path)
        assert "os.environ" not in text and "getenv" not in text, f"{module} reads the environment"


@pytest.mark.parametrize("module", sorted(m for m in KNOWN if m.startswith("xception_core")))
def test_core_writes_no_page_markup(module):
    """Strings in the core (docstrings aside) hold no Markdown emphasis or HTML: words for pages are
    made in demo.ui.text."""
    tree = parsed(KNOWN[module])
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            assert "**" not in node.value and "<br" not in node.value and "<b>" not in node.value, (module, node.value)


@pytest.mark.parametrize("module", APP_LAYER)
def test_app_does_no_model_math(module):
    roots = {name.split(".")[0] for name in imports(KNOWN[module])}
    assert not roots & MODEL_MATH, f"{module} imports {sorted(roots & MODEL_MATH)}"


@pytest.mark.parametrize("module", APP_LAYER)
def test_app_reaches_tensorflow_only_through_the_named_debt(module):
    beyond = model_math_reached(module, KNOWN) - TENSORFLOW_DEBT
    assert not beyond, f"{module} reaches TensorFlow/Keras through modules not in TENSORFLOW_DEBT: {sorted(beyond)}"


# What a serving process imports: the entry point, the server, the Ray Serve model replica, and
# what they serve from (the store and the core's serving path).
SERVING = ("app", "demo.server", "demo.store", "demo.store.interface", "demo.store.cache", "demo.store.served", "demo.store.local",
           "scale.deployment", "scale.api", "scale.ingress",
           "xception_core.runtime.translated",
           "xception_core.runtime.activations", "xception_core.runtime.ort", "xception_core.runtime.knockout")


@pytest.mark.parametrize("module", SERVING)
def test_serving_imports_no_tensorflow_at_import_time(module):
    """Importing a serving module imports no TensorFlow or Keras, through any chain of module-level
    imports: a process answers from the cached translation, and loads TensorFlow only when a
    feature needs it (`tests/xception_core/test_translated.py` and `tests/demo/test_lean_serving.py`
    check the running processes)."""
    found = tensorflow_at_import(module, KNOWN)
    assert not found, "imports TensorFlow/Keras at import time: " + "; ".join(
        " → ".join(chain) for chain in found.values())


def test_the_tensorflow_debt_names_only_what_is_still_owed():
    reached = set().union(*(model_math_reached(m, KNOWN) for m in APP_LAYER))
    stale = TENSORFLOW_DEBT - reached
    assert not stale, f"no longer reached from the app layer, or no longer importing TensorFlow/Keras: {sorted(stale)}"


@pytest.mark.parametrize("module", sorted(m for m in KNOWN if m.startswith(("demo.store", "demo.services")) and m != "demo.store_remote"))
def test_services_hold_no_gradio(module):
    roots = {name.split(".")[0] for name in imports(KNOWN[module])}
    assert not roots & UI_LIBRARIES, f"{module} imports {sorted(roots & UI_LIBRARIES)}"


# The architecture is read through its record (`xception_core.arch.registry.architecture`, a model's
# `ModelInfo.arch`), never by the constant of one spec: a second architecture then needs no edit
# outside `arch/` and its preset. Tests are held to it too (this file only names it to look for it).
ONE_SPEC = "XCEPTION_SPEC"
ARCH_FOLDER = "xception_core/arch/"


def names_used(path: Path) -> set[str]:
    """Every identifier a file uses: names, attributes, imported names, and whole strings (a
    lazy-export table names modules' attributes in strings)."""
    found: set[str] = set()
    for node in ast.walk(parsed(path)):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.alias):
            found.update({node.name.split(".")[-1], node.asname or ""})
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
            found.add(node.value)
    return found


def readers_of_the_spec_constant(root: Path = ROOT) -> list[str]:
    paths = list(sources(root).values()) + sorted((root / "tests").rglob("*.py"))
    return sorted(str(p.relative_to(root)) for p in paths
                  if not str(p.relative_to(root)).startswith(ARCH_FOLDER) and p.resolve() != Path(__file__).resolve()
                  and ONE_SPEC in names_used(p))


def test_only_arch_names_the_spec_constant():
    assert readers_of_the_spec_constant() == []


def test_the_spec_check_sees_a_reader(tmp_path):
    files = {"xception_core/arch/spec.py": f"{ONE_SPEC} = 1\n",
             "xception_core/runtime/a.py": f"from xception_core.arch.spec import {ONE_SPEC}\n",
             "xception_core/runtime/b.py": f"import xception_core.arch.spec as s\nx = s.{ONE_SPEC}\n",
             "xception_core/__init__.py": f"EXPORTS = {{'{ONE_SPEC}': 'xception_core.arch.spec'}}\n",
             "demo/c.py": "from xception_core.arch.registry import architecture\nx = architecture().spec\n",
             "tests/test_d.py": f"from xception_core.arch.spec import {ONE_SPEC} as S\n"}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert readers_of_the_spec_constant(tmp_path) == ["tests/test_d.py", "xception_core/__init__.py",
                                                      "xception_core/runtime/a.py", "xception_core/runtime/b.py"]


@pytest.mark.parametrize("path", LIGHT)
def test_light_modules_do_not_import_tensorflow(path):
    roots = {name.split(".")[0] for name in imports(ROOT / path)}
    assert not roots & (MODEL_MATH | UI_LIBRARIES)


def test_the_checks_see_a_violation(tmp_path):
    """On a small project of their own: the reader finds function-level and relative imports, an
    unranked module is refused, and TensorFlow is found two imports away."""
    files = {
        "xception_core/__init__.py": "",
        "xception_core/arch/__init__.py": "",
        "xception_core/arch/probe.py": "def f():\n    from ..model import load_model\n    import gradio\n",
        "xception_core/model.py": "import keras\n",
        "demo/__init__.py": "",
        "demo/ui/__init__.py": "",
        "demo/ui/page.py": "def build():\n    from demo.store import ModelStore\n",
        "demo/store.py": "from xception_core.model import load_model\n",
        "demo/new_module.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    known = sources(tmp_path)
    found = imports(known["xception_core.arch.probe"], tmp_path)
    assert "xception_core.model" in found and "gradio" in found
    assert rank("xception_core.model") > rank("xception_core.arch.probe")
    with pytest.raises(KeyError, match="demo.new_module has no rank"):
        rank("demo.new_module")
    assert reachable("demo.ui.page", known, tmp_path) == {"demo.store", "xception_core.model"}
    assert model_math_reached("demo.ui.page", known, tmp_path) == {"xception_core.model"}
    # At import time: demo.store reaches keras through xception_core.model; demo.ui.page only lazily.
    assert tensorflow_at_import("demo.store", known, tmp_path) == {
        "xception_core.model": ["demo.store", "xception_core.model"]}
    assert tensorflow_at_import("demo.ui.page", known, tmp_path) == {}
