"""segjax's import structure, read from the source (nothing is imported): no import circles,
deferred imports inside functions included, and no library module importing a command module
(one that ends in ``cli.run(main, ...)``), so that the layers stay layers."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).parents[1] / "segjax"


def module_name(path: pathlib.Path, package: pathlib.Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: pathlib.Path = PACKAGE) -> tuple[dict[str, set[str]], set[str]]:
    """(module -> the segjax modules it imports anywhere in its source, the command modules).
    ``from a.b import c`` counts as importing ``a.b.c`` if that is a module, else ``a.b``; a
    module importing its own parent package is not an edge (Python runs the parent first)."""
    modules = {module_name(p, package): p for p in package.rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package upwards
                    package_name = name if path.name == "__init__.py" else name.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        package_name = package_name.rpartition(".")[0]
                    base = f"{package_name}.{base}" if base else package_name
                targets = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                resolved = resolve(target) if target.startswith("segjax") else None
                if resolved and resolved != name and not name.startswith(resolved + "."):
                    edges.add(resolved)
        graph[name] = edges
    commands = {n for n, p in modules.items() if "cli.run(main" in p.read_text()}
    return graph, commands


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_segjax_has_no_import_circles():
    graph, _ = import_graph()
    assert len(graph) > 40 and "segjax.runs" in graph["segjax.trainer"]
    assert circles(graph) == []


def test_no_library_module_imports_a_command():
    graph, commands = import_graph()
    assert {"segjax.train", "segjax.predict", "segjax.experiments.run"} <= commands
    offending = {
        name: sorted(graph[name] & commands)
        for name in graph
        if name not in commands and graph[name] & commands
    }
    assert offending == {}


def test_the_walker_finds_a_deferred_circle(tmp_path):
    """The check can fail: a circle closed by an import inside a function is found."""
    package = tmp_path / "segjax"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from segjax.b import f\n")
    (package / "b.py").write_text("def f():\n    from segjax import a\n")
    (package / "c.py").write_text("import segjax.a\n")
    graph, _ = import_graph(package)
    assert graph["segjax.b"] == {"segjax.a"} and circles(graph) == [["segjax.a", "segjax.b"]]
