"""The package's shape, checked from its source: no import cycles, imports that point down the layers
only, no huge functions or modules, and `import tunesmith` / `tunesmith --help` without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "tunesmith"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 500


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports, at any depth of the file (imports inside functions
    count: they run too). Importing a.b.c also runs the packages a and a.b, so those are edges too."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        here = name.split(".") if is_package else name.split(".")[:-1]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            named: list[str] = []  # what the statement names: those are edges even to a parent package
            if isinstance(node, ast.ImportFrom):
                base = here[: len(here) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                submodules = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in modules]
                named += submodules if len(submodules) == len(node.names) else [module, *submodules]
            elif isinstance(node, ast.Import):
                named += [alias.name for alias in node.names]
            for target in named:
                if target in modules and target != name:
                    targets.add(target)
                parts = target.split(".")
                for k in range(1, len(parts)):  # packages run on the way down, except our own
                    prefix = ".".join(parts[:k])
                    if prefix in modules and not name.startswith(prefix + ".") and prefix != name:
                        targets.add(prefix)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_cycle_finder_finds_a_planted_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert graph["tunesmith.commands.train"], "the graph builder found no imports: it is broken"
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph) or [])}"


TOP_LAYER = ("tunesmith.cli", "tunesmith.cli_server", "tunesmith.cli_options", "tunesmith.cli_config",
             "tunesmith.cli_grade", "tunesmith.runtime", "tunesmith.__main__", "tunesmith.commands", "tunesmith.ui")
"""What parses flags, runs a command's recipe or serves the page: everything else is machinery."""

UPWARD = (
    ("machinery", lambda m: not _within(m, *TOP_LAYER),
     ("tunesmith.commands", "tunesmith.cli", "tunesmith.cli_server", "tunesmith.cli_grade", "tunesmith.ui")),
    ("server", lambda m: _within(m, "tunesmith.server"), ("tunesmith.ui",)),
    ("serve", lambda m: _within(m, "tunesmith.serve"), ("tunesmith.server", "tunesmith.ui")),
    ("web", lambda m: _within(m, "tunesmith.web"), ("tunesmith.serve", "tunesmith.server", "tunesmith.ui")),
)
"""(who, which modules the rule holds, what they must not import): machinery never imports a command,
the CLI or the page; ui may import server, which may import serve, never the reverse; web imports none."""


def _within(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every edge of `graph` that points up a layer, as 'rule: module -> target'."""
    return sorted(f"{who}: {module} -> {target}" for who, holds, banned in UPWARD
                  for module, targets in graph.items() if holds(module)
                  for target in targets if _within(target, *banned))


def test_the_direction_rule_finds_planted_violations() -> None:
    fake = {
        "tunesmith.training.loop": {"tunesmith.commands.train", "tunesmith.config"},
        "tunesmith.commands.train": {"tunesmith.training.loop", "tunesmith.run"},
        "tunesmith.ui.app": {"tunesmith.server.app", "tunesmith.commands.compare"},
        "tunesmith.server.app": {"tunesmith.ui.app", "tunesmith.serve.app"},
        "tunesmith.web.guard": {"tunesmith.serve.app"},
        "tunesmith.cli": {"tunesmith.commands.train"},
    }
    assert upward_imports(fake) == [
        "machinery: tunesmith.server.app -> tunesmith.ui.app",
        "machinery: tunesmith.training.loop -> tunesmith.commands.train",
        "server: tunesmith.server.app -> tunesmith.ui.app",
        "web: tunesmith.web.guard -> tunesmith.serve.app",
    ]


def test_imports_point_down_the_layers() -> None:
    graph = import_graph()
    assert "tunesmith.commands.train" in graph["tunesmith.cli"]  # the rule would pass on a broken graph otherwise
    assert "tunesmith.commands.compare" in graph["tunesmith.ui.tasks"]
    assert not upward_imports(graph), upward_imports(graph)


def test_the_web_layer_sits_under_serve_server_and_ui() -> None:
    """serve, server and ui share one web layer that imports none of them; ui sits on server, never the
    reverse."""
    graph = import_graph()

    def imports(package: str, other: str) -> list[str]:
        return sorted(f"{m} -> {t}" for m, targets in graph.items() if m == package or m.startswith(package + ".")
                      for t in targets if t == other or t.startswith(other + "."))

    for package in ("tunesmith.serve", "tunesmith.server", "tunesmith.ui"):
        assert imports(package, "tunesmith.web"), f"{package} does not use the web layer"
        assert not imports("tunesmith.web", package), imports("tunesmith.web", package)
    assert imports("tunesmith.ui", "tunesmith.server")  # the check below would pass on a broken graph otherwise
    assert not imports("tunesmith.server", "tunesmith.ui"), imports("tunesmith.server", "tunesmith.ui")


RUN_FILES = {"config.yaml", "manifest.json", "metrics.jsonl", "summary.json", "eval.json", "compare.json",
             "trackers.json", "curve.json"}


def test_only_the_run_module_names_a_runs_files() -> None:
    """A run's files have one owner: no other module builds their paths (a name in a docstring is fine)."""
    named = []
    for name, path in _modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)}
        named += [f"{name}:{node.lineno} {node.value}" for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and node.value in RUN_FILES and id(node) not in docstrings]
    assert any(n.startswith("tunesmith.run:") for n in named), "the check finds nothing: it is broken"
    assert [n for n in named if not n.startswith("tunesmith.run:")] == []


def test_no_long_functions_or_modules() -> None:
    long_functions, long_modules = [], []
    for name, path in _modules().items():
        source = path.read_text(encoding="utf-8")
        if source.count("\n") > MAX_MODULE_LINES:
            long_modules.append(f"{name}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{name}.{node.name}: {length} lines")
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines: {long_functions}"
    assert not long_modules, f"modules over {MAX_MODULE_LINES} lines: {long_modules}"


@pytest.mark.parametrize("code", [
    "import tunesmith",
    "import tunesmith.cli",
    "from tunesmith.run import RunDir, load_run",
    "from tunesmith import TrainConfig, load_config, TunesmithError",
])
def test_light_imports_do_not_load_torch(code: str) -> None:
    """The CLI's --help and `import tunesmith` stay fast: torch and transformers load on first use."""
    out = subprocess.run([sys.executable, "-c", f"{code}; import sys; print(sorted(m for m in ('torch', "
                          "'transformers', 'peft', 'accelerate', 'numpy') if m in sys.modules))"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_help_does_not_load_torch() -> None:
    code = ("import sys; from tunesmith.cli import main\n"
            "for args in (['--help'], ['train', '--help'], ['data', 'check', '--help'], ['eval', '--help']):\n"
            "    try:\n        main(args)\n    except SystemExit:\n        pass\n"
            "print('LOADED', sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("LOADED []"), out.stdout[-500:] + out.stderr
