"""Imports point down only (docs/DESIGN.md): no import cycle in r1jax, between modules or between
its packages, and every package imports only from the layers below it; rl, eval and distill are
siblings that meet in the rollout layer and never import one another.

The graph is read from the source with `ast`, so every import counts, function-level ones
included (a lazy import hides a cycle from the interpreter, not from the design); only imports
under `if TYPE_CHECKING:` are skipped. Importing `a.b.c` from outside package `a.b` also runs
`a/b/__init__.py`, so it adds an edge to `a.b`. A failure prints each cycle with the import lines
that close it.
"""

import ast
import pathlib


import r1jax

PACKAGE_ROOT = pathlib.Path(r1jax.__file__).resolve().parent

# The layers, top to bottom. A package may import its own modules and packages of lower layers.
LAYERS = (
    ("r1jax.recipe",),
    ("r1jax.rl", "r1jax.eval", "r1jax.distill", "r1jax.plan"),
    ("r1jax.rollout", "r1jax.train"),
    ("r1jax.sharding", "r1jax.interop"),
    ("r1jax.models", "r1jax.data", "r1jax.distributed"),
    ("r1jax.nn",),
    ("r1jax.config",),
    ("r1jax.field_checks",),
)
RANK = {package: len(LAYERS) - i for i, layer in enumerate(LAYERS) for package in layer}


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST):
    """(line, module named, names imported from it or None, relative level) for each import that
    runs (all but those under `if TYPE_CHECKING:`)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name, None, 0) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield node.lineno, node.module or "", [a.name for a in node.names], node.level
        stack.extend(ast.iter_child_nodes(node))


def module_graph(root: pathlib.Path, package: str) -> dict[str, dict[str, str]]:
    """{module: {imported module: "file:line" of the import}} over the package in `root`."""
    files = {}
    for path in root.rglob("*.py"):
        parts = (package, *path.relative_to(root).with_suffix("").parts)
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for module, path in files.items():
        own_package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges = graph.setdefault(module, {})
        for line, named, names, level in sorted(_imports(ast.parse(path.read_text())), key=lambda i: i[0]):
            if level:  # relative: resolve against this module's package
                base = own_package.split(".")[: len(own_package.split(".")) - level + 1]
                named = ".".join(base + ([named] if named else []))
            targets = [f"{named}.{n}" if f"{named}.{n}" in files else named for n in names or [None]]
            for target in targets:
                while target and target not in files:  # `import a.b.c` of a non-module name
                    target = target.rpartition(".")[0]
                if not target:
                    continue  # outside the package
                where = f"{path.relative_to(root.parent)}:{line}"
                edges.setdefault(target, where)
                parent = target.rpartition(".")[0]
                while parent:  # the parent packages' __init__ run first, unless we are inside them
                    if parent in files and not (module == parent or module.startswith(parent + ".")):
                        edges.setdefault(parent, where)
                    parent = parent.rpartition(".")[0]
    return graph


def package_graph(graph: dict[str, dict[str, str]], depth: int = 2) -> dict[str, dict[str, str]]:
    """The module graph collapsed to packages `depth` names deep (r1jax.rl, r1jax.config, ...)."""
    collapsed = {}
    for module, edges in graph.items():
        src = ".".join(module.split(".")[:depth])
        out = collapsed.setdefault(src, {})
        for target, where in edges.items():
            dst = ".".join(target.split(".")[:depth])
            if dst != src:
                out.setdefault(dst, where)
    return collapsed


def cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """The strongly connected components with a cycle (Tarjan), each sorted."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1 or v in graph.get(v, {}):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def describe(graph: dict[str, dict[str, str]], component: list[str]) -> str:
    """One cycle through `component`, each step with the import that makes it."""
    members, start = set(component), component[0]
    paths, frontier = {start: [start]}, [start]
    while frontier:  # breadth-first back to start inside the component
        v = frontier.pop(0)
        for w in sorted(graph[v]):
            if w == start:
                cycle = paths[v] + [start]
                return "\n".join(f"  {a} -> {b}   ({graph[a][b]})" for a, b in zip(cycle, cycle[1:]))
            if w in members and w not in paths:
                paths[w] = paths[v] + [w]
                frontier.append(w)
    raise AssertionError(f"{component} is not a cycle")


def report(graph, found) -> str:
    return "\n".join(f"cycle among {c}:\n{describe(graph, c)}" for c in found)


def test_no_import_cycle_between_r1jax_modules():
    graph = module_graph(PACKAGE_ROOT, "r1jax")
    assert "r1jax.interop.hf" in graph and "r1jax.models.api" in graph["r1jax.interop.deepseek_v3"]
    found = cycles(graph)
    assert not found, "\n" + report(graph, found)


def test_no_import_cycle_between_r1jax_packages():
    graph = package_graph(module_graph(PACKAGE_ROOT, "r1jax"))
    found = cycles(graph)
    assert not found, "\n" + report(graph, found)


def test_every_package_imports_only_from_lower_layers():
    graph = package_graph(module_graph(PACKAGE_ROOT, "r1jax"))
    graph.pop("r1jax", None)  # the top-level __init__ exposes nothing from the layers
    unplaced = sorted(set(graph) - set(RANK))
    assert not unplaced, f"packages not placed in LAYERS: {unplaced}"
    upward = [f"{src} -> {dst}   ({where})" for src, edges in graph.items()
              for dst, where in edges.items() if dst in RANK and RANK[dst] >= RANK[src]]
    assert not upward, "imports that do not point down:\n" + "\n".join(upward)


def test_the_checker_sees_a_function_level_cycle(tmp_path):
    """The shape r1jax/interop had: one module imports the other at the top, which imports it
    back inside a function; a parent package's __init__ counts too."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub.b import g\n")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def g():\n    from pkg import a  # lazy\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n")
    graph = module_graph(pkg, "pkg")
    assert graph["pkg.a"] == {"pkg.sub.b": "pkg/a.py:1", "pkg.sub": "pkg/a.py:1"}
    assert cycles(graph) == [["pkg.a", "pkg.sub", "pkg.sub.b"]]
    assert "pkg.sub.b -> pkg.a   (pkg/sub/b.py:2)" in report(graph, cycles(graph))
    assert graph["pkg.c"] == {}  # TYPE_CHECKING imports do not run
