"""The package's layers: no import circle, models and inference know no trainer, tagging needs no Lightning.

Every import counts, module-level, inside functions and under `TYPE_CHECKING` alike: a lazy import is
still a dependency, and a type-only circle is one refactoring away from a runtime one.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mmner"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """mmner module -> the mmner modules it imports (a name imported from a package counts as its
    submodule when there is one)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and target.startswith("mmner"):
                    deps.add(target)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_lazy_and_type_only_imports():
    graph = import_graph()
    assert "mmner.train.sweep" in graph["mmner.cli"]  # imported inside a command function
    assert "mmner.vision.config" in graph["mmner.vision.inputs"]  # imported under TYPE_CHECKING
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle():
    assert cycles(import_graph()) == []


def test_models_and_inference_know_no_trainer():
    graph = import_graph()
    layers = ("mmner.models", "mmner.inference", "mmner.api", "mmner.predict", "mmner.serve", "mmner.data",
              "mmner.vision", "mmner.tagging", "mmner.text")
    bad = sorted((m, d) for m, deps in graph.items() for d in deps
                 if m.startswith(layers) and (d == "mmner.train" or d.startswith("mmner.train.")))
    assert bad == []


def test_tagging_a_post_needs_no_lightning(tmp_path, tiny_model_params, tiny_corpus):
    """Load a trained run and tag a post through the API in a fresh interpreter: Lightning never loads."""
    from conftest import tiny_config
    from mmner.config import load_config
    from mmner.train.run import train

    run = tmp_path / "run"
    train(load_config(None, base=tiny_config(tiny_model_params["bert-crf"], tiny_corpus, max_epochs=1)), run, quiet=True)
    script = (
        "import sys\n"
        "import mmner.api\n"
        "assert 'lightning' not in sys.modules\n"
        f"tagger = mmner.api.Tagger.load({str(run)!r})\n"
        "record = tagger('meet Kevin at the game today')\n"
        "assert record['tags'], record\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
