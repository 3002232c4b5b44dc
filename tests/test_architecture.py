"""The shape of the code: layers, no import cycles, a run module that only orchestrates."""

import ast
import os

import pytest

import tfimgopt

ROOT = os.path.dirname(tfimgopt.__file__)


def _modules():
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
                yield rel.removesuffix(".__init__"), path


def _module_level_imports(path, module, known, everywhere=False):
    """tfimgopt modules imported by one file: at module level, or (`everywhere`) also inside
    functions, where an import cycle hides from the module-level graph but is one all the same."""
    tree = ast.parse(open(path).read())
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()
    for node in (ast.walk(tree) if everywhere else tree.body):
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


def _graph(everywhere=False):
    modules = dict(_modules())
    return {m: _module_level_imports(p, m, modules, everywhere) for m, p in modules.items()}


@pytest.mark.parametrize("everywhere", [False, True], ids=["module-level", "with-imports-inside-functions"])
def test_no_import_cycles(everywhere):
    graph = _graph(everywhere)
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


# --- names as switches ------------------------------------------------------------------------

#: Where a registered name may be written as a literal in a comparison, a subscript or a
#: registry look-up: its owner module (where it is registered). Elsewhere a line that uses
#: the same word for something else says so with `# not-a-switch: <why>`.
SCANNED = ("tfimgopt.pipeline", "tfimgopt.cli", "tfimgopt.compress", "tfimgopt.export")
GETTERS = {"get_exporter", "get_stage", "get_technique", "open_artifact", "get_source"}


def _owners():
    from tfimgopt.compress import get_technique, list_techniques
    from tfimgopt.export import get_exporter, list_exporters
    from tfimgopt.pipeline.stages import get_stage, list_stages

    owners: dict[str, set[str]] = {}
    for name in list_exporters():
        owners.setdefault(name, set()).add(type(get_exporter(name)).__module__)
    for name in list_techniques():
        technique = get_technique(name)
        for word in (name, technique.report_key or name):
            owners.setdefault(word, set()).add(technique.apply.__module__)
    for name in list_stages():
        stage = get_stage(name)
        module = stage.technique.apply.__module__ if hasattr(stage, "technique") else type(stage).__module__
        for word in (name, stage.key):
            owners.setdefault(word, set()).add(module)
    owners.setdefault("student", set()).add("tfimgopt.pipeline.stages.distill")  # the model it makes
    return owners


def _source_names():
    from tfimgopt.data import list_sources

    return {name: {"tfimgopt.data.sources"} for name in list_sources()}


def _name_literals(tree, lines):
    """(line, word, kind) of string constants compared, subscripted or looked up by name."""

    def strings(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node
        elif isinstance(node, ast.Tuple | ast.List | ast.Set):
            for element in node.elts:
                yield from strings(element)

    for node in ast.walk(tree):
        found = []
        if isinstance(node, ast.Compare):
            found = [(c, "compare") for side in [node.left, *node.comparators] for c in strings(side)]
        elif isinstance(node, ast.Subscript):
            found = [(c, "subscript") for c in strings(node.slice)]
        elif isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in GETTERS:
                found = [(c, "look-up") for arg in node.args for c in strings(arg)]
        for constant, kind in found:
            if "# not-a-switch:" not in lines[constant.lineno - 1]:
                yield constant.lineno, constant.value, kind


def test_no_stage_technique_or_exporter_name_is_a_switch_outside_its_owner():
    owners, sources = _owners(), _source_names()
    hits = []
    for module, path in _modules():
        if not module.startswith(SCANNED):
            continue
        text = open(path).read()
        for line, word, kind in _name_literals(ast.parse(text), text.splitlines()):
            table = {**owners, **sources} if kind == "compare" else owners
            if word in table and module not in table[word]:
                hits.append(f"{module}:{line}: {word!r} ({kind}; owned by {sorted(table[word])})")
    assert not hits, "\n".join(hits)


def test_the_name_scan_sees_a_switch():
    src = 'if model == "baseline" or "int8" in modes:\n    x = by_key["evaluate"]\nget_exporter("savedmodel")\n'
    found = {(word, kind) for _, word, kind in _name_literals(ast.parse(src), src.splitlines())}
    assert found == {("baseline", "compare"), ("int8", "compare"), ("evaluate", "subscript"),
                     ("savedmodel", "look-up")}
    marked = 'x = report["config"]["export"]  # not-a-switch: the config section\n'
    assert not list(_name_literals(ast.parse(marked), marked.splitlines()))
