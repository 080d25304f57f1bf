"""Which `verifier_metadata` keys a server's code reads, found in its source without running it.

`meta["k"]` is a key the code needs; `meta.get("k")` and `"k" in meta` one it may use. Where the whole dict
leaves the code's sight (passed to a function, iterated, unpacked), any key may be used, so no key of a
task row can be called unknown.
"""

from __future__ import annotations

import ast
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path

from gym_ray.resources.server import ResourceServer


@dataclass
class MetadataReads:
    required: dict[str, str] = field(default_factory=dict)  # key -> "file:line" of a `meta["key"]`
    optional: set[str] = field(default_factory=set)
    whole: str | None = None  # "file:line" where the dict is used whole; None: every use is by key

    def known(self) -> set[str]:
        return {*self.required, *self.optional}


def metadata_reads(server: type[ResourceServer]) -> MetadataReads:
    """The keys read by the modules that define `server` and its bases (gym_ray's own base excluded)."""
    reads = MetadataReads()
    modules = {k.__module__ for k in server.__mro__ if issubclass(k, ResourceServer) and k is not ResourceServer}
    for name in sorted(modules):
        module = sys.modules.get(name)
        try:
            source, where = inspect.getsource(module), Path(inspect.getsourcefile(module)).name
        except (OSError, TypeError):
            reads.whole = reads.whole or f"{name} (no source)"
            continue
        _scan(ast.parse(source), where, reads)
    return reads


def _is_metadata(node: ast.AST, aliases: set[str]) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "verifier_metadata") or (
        isinstance(node, ast.Name) and node.id in aliases)


def _key(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _scan(tree: ast.AST, where: str, reads: MetadataReads) -> None:
    aliases = {t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) and _is_metadata(n.value, set())
               for t in n.targets if isinstance(t, ast.Name)}
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if not _is_metadata(node, aliases) or isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            continue
        up = parents.get(node)
        if isinstance(up, ast.Subscript) and up.value is node and (key := _key(up.slice)) is not None:
            reads.required.setdefault(key, f"{where}:{up.lineno}")
        elif (isinstance(up, ast.Attribute) and up.attr == "get" and isinstance(call := parents.get(up), ast.Call)
              and call.args and (key := _key(call.args[0])) is not None):
            reads.optional.add(key)
        elif (isinstance(up, ast.Compare) and node in up.comparators and len(up.ops) == 1
              and isinstance(up.ops[0], ast.In | ast.NotIn) and (key := _key(up.left)) is not None):
            reads.optional.add(key)
        elif isinstance(up, ast.Assign) and up.value is node:
            continue  # an alias: its own uses are scanned
        else:
            reads.whole = reads.whole or f"{where}:{getattr(node, 'lineno', '?')}"
