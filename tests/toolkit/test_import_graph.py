"""The import graph of `toolkit/` and `plugins/` runs in one direction.

Read with `ast` from the source files (every import, also those inside functions and under
TYPE_CHECKING), the graph must have no cycle among modules nor among plugin packages; the core
never imports a plugin; and a plugin imports another only along the few edges below, where one
family builds on another's model or protocol, and never another plugin's private module or name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOT_PACKAGES = ("toolkit", "plugins")

# importer plugin -> plugins it may import. Each edge is one family building on another:
ALLOWED_PLUGIN_EDGES = {
    ("clip", "catlip"),  # CLIP's image tower is CatLIP's ViT
    ("transfer", "catlip"),  # transfer fine-tunes a CatLIP tower and reads its synset vocabulary
    ("lm_eval", "lm"),  # the evaluators score language models the lm plugin loads
    ("gsm_symbolic", "lm_eval"),  # the gsm_symbolic evaluator runs lm_eval's GSM8K protocol
    ("rlhf", "lm"),  # SFT and RL fine-tune language models: the lm plugin's loss, tokenizer, sampler
    ("rlhf", "openelm"),  # the packed (document-masked) forward and value heads drive OpenELM's blocks
    ("rlhf", "lm_eval"),  # SFT data and the math reward use the GSM8K answer format and checks
    ("rlhf", "gsm_symbolic"),  # SFT and RL prompts are generated from the GSM-Symbolic templates
    ("duo", "openelm"),  # Duo-LLM's blocks are OpenELM's, with a small FFN beside the big one
    ("duo", "lm"),  # the duo_lm task extends causal_lm; tests decode with the lm plugin's sampler
    ("sparse", "openelm"),  # sparse decoding runs OpenELM's blocks with only the active FFN neurons
    ("openelm", "lm"),  # a Llama checkpoint (GGUF or HF) is imported into OpenELM: lm reads GGUF and tokenizers
    ("sparse", "lm"),  # tests and the benchmark decode with the lm plugin's sampler
}

Sources = dict[str, tuple[str, bool]]  # module name -> (source text, is it a package's __init__)
Graph = dict[str, set[str]]


def read_sources(repo: Path = REPO) -> Sources:
    sources: Sources = {}
    for package in ROOT_PACKAGES:
        for path in sorted((repo / package).rglob("*.py")):
            parts = list(path.relative_to(repo).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            sources[".".join(parts)] = (path.read_text(encoding="utf-8"), is_package)
    return sources


def _owning_module(name: str, modules: set[str]) -> str | None:
    """The longest prefix of dotted `name` that is one of `modules` (None: outside the graph)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def imports_of(module: str, source: str, is_package: bool, modules: set[str]) -> list[tuple[str, str]]:
    """(imported module, imported name or "") for every import statement of `module` inside the graph.

    `from package import name` counts as importing the submodule `package.name` when there is one,
    else the package itself (with `name` recorded, so private names can be checked)."""
    found: list[tuple[str, str]] = []
    package_parts = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _owning_module(alias.name, modules)
                if target:
                    found.append((target, ""))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                kept = package_parts[:len(package_parts) - (node.level - 1)]
                base = ".".join([*kept, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in modules:
                    found.append((submodule, ""))
                else:
                    target = _owning_module(base, modules)
                    if target:
                        found.append((target, alias.name))
    return found


def build_graph(sources: Sources) -> Graph:
    modules = set(sources)
    return {module: {target for target, _ in imports_of(module, source, is_package, modules) if target != module}
            for module, (source, is_package) in sources.items()}


def find_cycles(graph: Graph) -> list[list[str]]:
    """Every strongly connected component with more than one node, sorted (Tarjan, iterative)."""
    index_of: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index_of:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index_of[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index_of:
                    index_of[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index_of[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index_of[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


def plugin_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "plugins" and len(parts) > 1 else None


def plugin_graph(graph: Graph) -> Graph:
    """The module graph collapsed onto plugin packages (edges between different plugins only)."""
    collapsed: Graph = {}
    for module, targets in graph.items():
        source = plugin_of(module)
        if source is None:
            continue
        collapsed.setdefault(source, set())
        for target in targets:
            other = plugin_of(target)
            if other is not None and other != source:
                collapsed[source].add(other)
    return collapsed


def layering_violations(sources: Sources, allowed: set[tuple[str, str]]) -> list[str]:
    """Core modules importing plugins, and plugin imports of other plugins off the allow-list or
    of their private modules or names, as one line each."""
    modules = set(sources)
    problems = []
    for module, (source, is_package) in sorted(sources.items()):
        importer = plugin_of(module)
        for target, name in imports_of(module, source, is_package, modules):
            imported = plugin_of(target)
            if module.startswith("toolkit") and target.split(".")[0] == "plugins":
                problems.append(f"{module} (core) imports {target}")
            if importer is None or imported is None or imported == importer:
                continue
            if (importer, imported) not in allowed:
                problems.append(f"{module} imports {target}: plugin '{importer}' may not import plugin '{imported}'")
            private = [part for part in [*target.split(".")[2:], name] if part.startswith("_")]
            if private:
                problems.append(f"{module} imports {target}{'.' + name if name else ''}: private to '{imported}'")
    return problems


# --- the repository ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sources() -> Sources:
    return read_sources()


def test_the_walk_sees_both_trees_and_lazy_imports(sources):
    graph = build_graph(sources)
    assert "toolkit.plugins" in graph and "plugins.lm.dataset" in graph
    assert "plugins.gsm_symbolic.evaluator" in graph["plugins.gsm_symbolic"]  # imported inside a hook


def test_no_module_imports_run_in_a_circle(sources):
    cycles = find_cycles(build_graph(sources))
    assert cycles == []


def test_no_plugin_packages_import_each_other_in_a_circle(sources):
    assert find_cycles(plugin_graph(build_graph(sources))) == []


def test_the_core_never_imports_plugins_and_plugins_build_only_on_allowed_families(sources):
    assert layering_violations(sources, ALLOWED_PLUGIN_EDGES) == []


# --- the checker itself, on small made-up graphs ----------------------------------------------

def test_the_checker_finds_a_cycle_through_a_function_level_import():
    sources = {
        "pkg": ("", True),
        "pkg.a": ("from pkg import b\n", False),
        "pkg.b": ("import pkg.c as c\n", False),
        "pkg.c": ("def late():\n    from .a import thing\n    return thing\n", False),
        "pkg.d": ("from pkg.a import thing\n", False),
    }
    graph = build_graph(sources)
    assert graph["pkg.c"] == {"pkg.a"}
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
    del sources["pkg.c"]
    assert find_cycles(build_graph(sources)) == []


def test_the_checker_finds_plugin_cycles_core_imports_and_private_imports():
    sources = {
        "toolkit": ("", True),
        "toolkit.engine": ("from plugins.alpha import model\n", False),
        "plugins": ("", True),
        "plugins.alpha": ("", True),
        "plugins.alpha.model": ("from plugins.beta.tower import Tower\n", False),
        "plugins.alpha._cache": ("", False),
        "plugins.beta": ("", True),
        "plugins.beta.tower": ("from plugins.alpha import _cache\n", False),
        "plugins.beta.util": ("from plugins.alpha.model import _helper\n", False),
    }
    graph = build_graph(sources)
    assert find_cycles(graph) == []
    assert find_cycles(plugin_graph(graph)) == [["alpha", "beta"]]
    problems = layering_violations(sources, allowed={("alpha", "beta"), ("beta", "alpha")})
    assert problems == [
        "plugins.beta.tower imports plugins.alpha._cache: private to 'alpha'",
        "plugins.beta.util imports plugins.alpha.model._helper: private to 'alpha'",
        "toolkit.engine (core) imports plugins.alpha.model",
    ]
    assert "plugin 'alpha' may not import plugin 'beta'" in " ".join(layering_violations(sources, allowed=set()))
