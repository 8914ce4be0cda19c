"""Method names and defaults of the ``qsmprep.qsm`` modules, read without importing them.

Building the command-line parser needs the ``METHODS`` keys and ``DEFAULT`` of each numerical
module; importing those modules pulls in numba and scipy (about 1-2 s, most of ``qsmprep
--help``). :func:`method_choices` reads them from the module's source with :mod:`ast` instead
(a dict literal with string keys, a string ``DEFAULT``) and imports the module only when the
source does not have that form. ``tests/cli/test_startup.py`` checks that both ways agree.
"""

from __future__ import annotations

import ast
import importlib
from functools import lru_cache
from pathlib import Path

__all__ = ["method_choices"]


def _mutated(tree) -> bool:
    """True when the module changes ``METHODS`` after its literal (item assignment, update)."""
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for tgt in targets:
            if isinstance(tgt, ast.Subscript) and getattr(tgt.value, "id", "") == "METHODS":
                return True
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and getattr(node.func.value, "id", "") == "METHODS"
                and node.func.attr in ("update", "setdefault", "pop", "popitem", "clear")):
            return True
    return False


def _literal_registry(source: str):
    names, default = None, None
    tree = ast.parse(source)
    if _mutated(tree):
        return None, None
    for node in tree.body:
        if not isinstance(node, (ast.Assign, ast.AnnAssign)):
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for tgt in targets:
            if not isinstance(tgt, ast.Name):
                continue
            if tgt.id == "METHODS":
                if isinstance(node.value, ast.Dict) and all(
                        isinstance(k, ast.Constant) and isinstance(k.value, str)
                        for k in node.value.keys):
                    names = [k.value for k in node.value.keys]
                else:  # built another way: only an import can tell
                    return None, None
            elif tgt.id == "DEFAULT":
                if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                    default = node.value.value
                else:
                    return None, None
        if isinstance(node, ast.AugAssign) and getattr(node.target, "id", "") == "METHODS":
            return None, None
    return names, default


@lru_cache(maxsize=None)
def method_choices(module_name: str) -> tuple[tuple[str, ...], str]:
    """``(choices, default)`` of ``qsmprep.qsm.<module_name>`` (default: ``DEFAULT`` or the first).

    Read from the source file when ``METHODS`` is a literal dict with string keys and nothing
    else assigns to it; otherwise the module is imported.
    """
    path = Path(__file__).with_name(f"{module_name}.py")
    names = default = None
    if path.is_file():
        try:
            names, default = _literal_registry(path.read_text(encoding="utf-8"))
        except SyntaxError:
            names = None
    if not names:
        mod = importlib.import_module(f"qsmprep.qsm.{module_name}")
        names = list(mod.METHODS)
        default = getattr(mod, "DEFAULT", None)
    return tuple(names), (default or names[0])
