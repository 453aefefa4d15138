"""The module import graph of refq: no cycles, and the float layers stay at the bottom.

Every `import` and `from ... import` statement in every module under refq/ counts, at module level,
inside functions and under `if TYPE_CHECKING:` alike; relative imports are resolved against the
importing module's package. `from package import name` is an edge to `package.name` when that is a
module, otherwise to `package` itself.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "refq"

LAYERS = "refq.layers"
FORBIDDEN_FROM_LAYERS = ("refq.fixedpoint", "refq.quant", "refq.algorithms", "refq.conformance")


def _module_files():
    files = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        files[".".join(parts)] = (path, is_package)
    return files


def _resolve(module, is_package, node):
    """The absolute module name a `from` statement imports from."""
    if node.level == 0:
        return node.module
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    if node.module:
        base = base + node.module.split(".")
    return ".".join(base)


def _imports(module, is_package, source, modules):
    """The modules among `modules` that `source` (the text of `module`) imports, anywhere in it."""
    targets = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            source_module = _resolve(module, is_package, node)
            for alias in node.names:
                submodule = f"{source_module}.{alias.name}"
                if submodule in modules:
                    targets.add(submodule)
                elif source_module in modules:
                    targets.add(source_module)
    targets.discard(module)
    return sorted(targets)


def _import_graph():
    files = _module_files()
    return {module: _imports(module, is_package, path.read_text(encoding="utf-8"), files)
            for module, (path, is_package) in files.items()}


def _strongly_connected_components(graph):
    """Tarjan's algorithm, iterative; components in discovery order."""
    index, lowlink, on_stack, stack, components = {}, {}, set(), [], []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = lowlink[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            advanced = False
            for succ in successors:
                if succ not in index:
                    index[succ] = lowlink[succ] = counter
                    counter += 1
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(graph[succ])))
                    advanced = True
                    break
                if succ in on_stack:
                    lowlink[node] = min(lowlink[node], index[succ])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                lowlink[parent] = min(lowlink[parent], lowlink[node])
            if lowlink[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def _cycle_in(graph, component):
    """One import cycle through the members of `component`, as a list of modules."""
    members = set(component)
    start = component[0]
    parents = {start: None}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for succ in graph[node]:
            if succ == start:
                path = [node]
                while parents[path[-1]] is not None:
                    path.append(parents[path[-1]])
                return list(reversed(path)) + [start]
            if succ in members and succ not in parents:
                parents[succ] = node
                queue.append(succ)
    return component


def test_imports_are_resolved_at_every_level():
    modules = {"p", "p.a", "p.b", "p.c", "p.q", "p.q.d", "p.q.e", "p.q.x"}
    source = """
import p.a
from . import d, name
from .. import c


def f():
    from .e import g
    if True:
        from ..b import h
"""
    assert _imports("p.q.x", False, source, modules) == \
        ["p.a", "p.b", "p.c", "p.q", "p.q.d", "p.q.e"]
    assert _imports("p.q", True, "from . import d\nfrom .e import x\nfrom ..a import y\n",
                    modules) == ["p.a", "p.q.d", "p.q.e"]
    graph = _import_graph()
    assert "refq.layers" in graph and "refq.fixedpoint.kernels" in graph


def test_no_import_cycles():
    graph = _import_graph()
    cycles = [c for c in _strongly_connected_components(graph) if len(c) > 1]
    message = "\n".join(
        f"cycle among {len(c)} modules: " + " -> ".join(_cycle_in(graph, c)) for c in cycles)
    if cycles:
        print(message)
    assert not cycles, "refq has import cycles:\n" + message


def test_layers_import_no_upper_package():
    graph = _import_graph()
    offending = []
    for module, targets in graph.items():
        if module != LAYERS and not module.startswith(LAYERS + "."):
            continue
        for target in targets:
            if any(target == up or target.startswith(up + ".") for up in FORBIDDEN_FROM_LAYERS):
                offending.append(f"{module} imports {target}")
    if offending:
        print("\n".join(offending))
    assert not offending, "refq.layers reaches up:\n" + "\n".join(offending)
