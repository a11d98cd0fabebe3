"""The package layout keeps its promises (ARCHITECTURE.md): no import cycles, the data path does not
depend on generated data or benchmarks, the library does not depend on benchmarks, psutil is a
benchmarks-only dependency, and modules stay small."""

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "transfer_tf")
MAX_LINES = 400


def _modules() -> dict[str, str]:
    """{dotted module name: path} of every module of the package."""
    out = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                module = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                out[module.removesuffix(".__init__")] = path
    return out


def _imports(path: str) -> set[str]:
    """Every module `path` imports, at the top or inside a function (lazy imports count: a cycle
    broken only by deferring an import is still a cycle in the design)."""
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, result = {}, {}, set(), [], []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    result.append(sorted(component))
    return result


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles(graph):
    assert _cycles(graph) == []


def _importers(graph, prefix: str) -> dict[str, set[str]]:
    return {
        m: {i for i in imports if i.startswith(prefix)}
        for m, imports in graph.items()
        if any(i.startswith(prefix) for i in imports)
    }


def test_the_data_path_does_not_depend_on_generated_data_or_benchmarks(graph):
    data = {m: i for m, i in graph.items() if m.split(".")[:2] == ["transfer_tf", "data"]}
    assert _importers(data, "transfer_tf.datagen") == {}
    assert _importers(data, "transfer_tf.benchmarks") == {}
    assert _importers(data, "transfer_tf.demo") == {}


def test_only_benchmarks_import_the_benchmarks_package_and_psutil(graph):
    outside = {m: i for m, i in graph.items() if not m.startswith("transfer_tf.benchmarks")}
    assert _importers(outside, "transfer_tf.benchmarks") == {}
    psutil_users = sorted(m for m, p in _modules().items() if "psutil" in _imports(p))
    assert all(m.startswith("transfer_tf.benchmarks.") for m in psutil_users), psutil_users


def test_modules_stay_under_the_size_limit():
    long = {
        os.path.relpath(p, REPO): n
        for p in _modules().values()
        if (n := sum(1 for _ in open(p))) > MAX_LINES
    }
    assert long == {}, f"split these modules (over {MAX_LINES} lines): {long}"
