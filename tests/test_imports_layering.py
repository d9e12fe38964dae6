"""pyfast's own modules form a layered graph (issue 17): no two modules import each other,
directly or around a longer loop, and no module reaches into another's private names.

The graph is read from the source with ``ast`` (nothing is imported), and it counts every
import statement, at module level and inside functions alike: a deferred import keeps
``import pyfast`` cheap (rule 6), but it is still a dependency, and a loop hidden in a
function body is the loop that forced ``python -m pyfast.cli`` to re-import itself.

A private name counts whether it is imported (``from pyfast.x import _y``) or read through
a module (``x._y`` after ``from pyfast import x``).

An edge into an ancestor package (``import pyfast as pf`` from pyfast/train/loop.py) is not
counted: importing any module imports its packages first anyway, and a package's
``__init__`` re-exporting its children is what packages are for. What such a module then
reaches through ``pf.<name>`` is beyond what a static reading can attribute.
"""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "pyfast"
ROOT = PACKAGE.name


def _modules():
    """{dotted name: (path, is_package)} of every Python module under pyfast/; compiled
    extensions (pyfast._C, ...) count as modules with no imports of their own (path None),
    so importing one is importing a module, not a private name."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.so")) + sorted(PACKAGE.rglob("*.pyd")):
        parts = path.relative_to(PACKAGE.parent).parts
        found[".".join(parts[:-1] + (parts[-1].partition(".")[0],))] = (None, False)
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        found[name] = (path, is_package)
    return found


def _imports(name, path, is_package):
    """(target module, line, bound name) for each ``import`` and (target module, line, the
    ``ast.alias``es) for each ``from ... import``; targets are absolute dotted names,
    relative imports resolved against ``name``."""
    base = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, alias.asname
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module
            yield target, node.lineno, node.names


def _unbuilt_extension(modules, package, name):
    """Whether ``from package import name`` names a compiled extension that is not built in
    this checkout: ``package`` is a package whose ``__init__`` does not define ``name``."""
    path, is_package = modules.get(package, (None, False))
    if not is_package:
        return False
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            return False
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return False
        if isinstance(node, (ast.Import, ast.ImportFrom)) and \
                any((a.asname or a.name) == name for a in node.names):
            return False
    return True


def _module_aliases(name, path, is_package, modules):
    """{local name: pyfast module} for the names a file binds to pyfast modules
    (``from pyfast.nn import init``, ``import pyfast.ops as ops``, ``import pyfast as pf``)."""
    aliases = {}
    for target, _, bound in _imports(name, path, is_package):
        if isinstance(bound, list):
            aliases.update((a.asname or a.name, f"{target}.{a.name}") for a in bound
                           if f"{target}.{a.name}" in modules)
        elif target.partition(".")[0] == ROOT and target in modules:
            aliases[bound or ROOT] = target if bound else ROOT
    return aliases


def _private_attributes(name, path, is_package, modules):
    """(line, module, attribute) for each ``module._private`` read through an alias, where
    ``_private`` is not itself a module (pf._C, pf._random are modules, not names)."""
    aliases = _module_aliases(name, path, is_package, modules)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)):
            continue
        target, attr = aliases.get(node.value.id), node.attr
        if target is None or target == name or not attr.startswith("_") or \
                attr.startswith("__") or f"{target}.{attr}" in modules or \
                _unbuilt_extension(modules, target, attr):
            continue
        yield node.lineno, target, attr


def _graph():
    """({module: {imported module: first line}}, [(module, line, target, private name)])."""
    modules = _modules()
    edges, private = {m: {} for m in modules}, []
    for name, (path, is_package) in modules.items():
        if path is None:
            continue
        for target, line, bound in _imports(name, path, is_package):
            if target != ROOT and not target.startswith(ROOT + "."):
                continue
            # `from pyfast.x import y` imports the module pyfast.x.y when there is one
            reached = [target]
            for n in [a.name for a in bound] if isinstance(bound, list) else ():
                sub = f"{target}.{n}"
                if sub in modules or _unbuilt_extension(modules, target, n):
                    reached.append(sub)
                elif n.startswith("_") and not n.startswith("__") and target != name:
                    private.append((name, line, target, n))
            for t in reached:
                t = t if t in modules else t.rpartition(".")[0]
                if t == name or name.startswith(t + "."):   # itself or an ancestor package
                    continue
                edges[name].setdefault(t, line)
        private += [(name, line, target, attr) for line, target, attr in
                    _private_attributes(name, path, is_package, modules)]
    return edges, private


def _cycles(edges):
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        component.add(m)
                        if m == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def _describe(component, edges):
    inside = set(component)
    return "; ".join(f"{a} -> {b} (line {edges[a][b]})" for a in component
                     for b in sorted(edges[a]) if b in inside)


def test_the_graph_sees_pyfast():
    # a walk that found nothing would pass everything below
    edges, _ = _graph()
    assert "pyfast.cli" in edges and "pyfast.tensor" in edges["pyfast.nn.module"]


def test_no_import_cycles():
    edges, _ = _graph()
    cycles = _cycles(edges)
    assert cycles == [], "import cycles: " + " | ".join(_describe(c, edges) for c in cycles)


def test_no_private_names_across_modules():
    _, private = _graph()
    lines = [f"{m}:{line} uses {target}.{name}" for m, line, target, name in private]
    assert lines == [], "make shared helpers public in their owner module:\n" + "\n".join(lines)


def test_the_checks_fail_on_what_they_forbid():
    assert _cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == \
        [["a", "b", "c"]]
    assert _cycles({"a": {"b": 1}, "b": {}}) == []
