"""The shape of the code: layers, no import cycles, a run module that only orchestrates."""

import ast
import os

import tfimgopt

ROOT = os.path.dirname(tfimgopt.__file__)


def _modules():
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
                yield rel.removesuffix(".__init__"), path


def _module_level_imports(path, module, known):
    """tfimgopt modules imported at module level (not inside functions) by one file."""
    tree = ast.parse(open(path).read())
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.add(target if target in known else base)
    return {m for m in found if m in known and m != module}


def _graph():
    modules = dict(_modules())
    return {m: _module_level_imports(p, m, modules) for m, p in modules.items()}


def test_no_module_level_import_cycles():
    graph = _graph()
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(node):  # Tarjan's strongly connected components
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            # A package importing its own submodules, which import siblings, is how packages work.
            real = [m for m in component if not any(o != m and o.startswith(m + ".") for o in component)]
            if len(real) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert not cycles, cycles


def test_lower_layers_never_import_upper_ones():
    graph = _graph()
    capability = ("data", "augment", "models", "distribute", "compress", "distill", "export", "training")
    for module, imports in graph.items():
        parts = module.split(".")
        if len(parts) > 1 and parts[1] in capability + ("compat", "errors", "_registry", "_io", "_platform"):
            upper = [m for m in imports if m.startswith(("tfimgopt.pipeline", "tfimgopt.cli"))]
            assert not upper, (module, upper)
        if module.startswith("tfimgopt.pipeline"):
            assert "tfimgopt.cli" not in imports, module


def test_the_run_module_only_orchestrates():
    path = os.path.join(ROOT, "pipeline", "run.py")
    tree = ast.parse(open(path).read())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    # It reaches the capabilities only through stages; no training, export or compression code of its own.
    assert not imported & {"tfimgopt.training", "tfimgopt.export", "tfimgopt.compress", "tfimgopt.distill",
                           "tfimgopt.models", "tfimgopt.augment"}
    functions = [n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    assert not [f for f in functions if f.endswith("_stage") and f != "_run_stage"], functions
    assert len(open(path).read().splitlines()) < 300


def test_private_helpers_are_not_public():
    from tfimgopt import pipeline

    for name in ("calibration_images", "distill_student", "prune_model", "prune_skip"):
        assert name not in pipeline.__all__ and not hasattr(pipeline, name)
