"""Spotting submitted code that could change how its own tests judge it.

A test cell passes when it raises nothing. Code in an answer cell runs in the same
namespace and the same process as the tests, so it could replace a check function,
the assertion machinery or a builtin, or swallow exceptions through IPython, and
pass tests it should fail. Such code is rare and sometimes innocent, so it is not
penalised: the submission is flagged for a person to read.

The scan reads the syntax tree of every cell the student wrote (answer cells and
cells they added), never runs it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable

from nbformat import NotebookNode

__all__ = ["suspicious_code"]

# Names whose rebinding could change the outcome of a test.
GUARDED_NAMES = {
    "AssertionError",
    "BaseException",
    "Exception",
    "CheckFailure",
    "__builtins__",
    "__import__",
    "builtins",
    "isinstance",
    "getattr",
    "setattr",
    "exec",
    "eval",
    "compile",
    "print",
}
# Attributes of the sys module that redirect imports, exceptions or execution.
SYS_HOOKS = {
    "modules",
    "meta_path",
    "path_hooks",
    "excepthook",
    "displayhook",
    "settrace",
    "setprofile",
    "_getframe",
}
# Attribute names that reach into frames, functions or the interpreter's internals.
INTERNALS = {
    "__globals__",
    "__code__",
    "__closure__",
    "__subclasses__",
    "__builtins__",
    "f_back",
    "f_globals",
    "f_locals",
    "f_builtins",
    "set_custom_exc",
    "showtraceback",
    "currentframe",
    "get_referrers",
}
# Methods that change a container in place (a check's tolerances, sys.modules).
MUTATORS = {
    "clear",
    "update",
    "pop",
    "popitem",
    "setdefault",
    "append",
    "extend",
    "insert",
    "remove",
    "__setitem__",
    "__delitem__",
}
# IPython line magics that only measure or display.
HARMLESS_MAGICS = {"time", "timeit", "matplotlib", "who", "whos", "pinfo", "pinfo2"}


def _root_name(node: ast.AST) -> str | None:
    """The name at the root of an attribute or subscript chain (``a`` in ``a.b[0].c``)."""
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _bound_names(target: ast.AST) -> Iterable[ast.AST]:
    """Every name, attribute or item that an assignment target binds."""
    if isinstance(target, (ast.Tuple, ast.List)):
        for element in target.elts:
            yield from _bound_names(element)
    elif isinstance(target, ast.Starred):
        yield from _bound_names(target.value)
    else:
        yield target


class _Scanner(ast.NodeVisitor):
    def __init__(self, protected: set[str], where: str) -> None:
        self.protected = protected  # names the course's own cells import, e.g. "ex"
        self.where = where
        self.found: list[str] = []

    def _flag(self, node: ast.AST, what: str) -> None:
        self.found.append(f"{self.where}, line {getattr(node, 'lineno', '?')}: {what}")

    def _guarded(self, name: str | None) -> bool:
        return bool(name) and (
            name in GUARDED_NAMES or name in self.protected or name.startswith("check_")
        )

    def _target(self, target: ast.AST, verb: str) -> None:
        for bound in _bound_names(target):
            root = _root_name(bound)
            if isinstance(bound, ast.Name) and self._guarded(bound.id):
                self._flag(bound, f"{verb} {bound.id}")
            elif not isinstance(bound, ast.Name) and root is not None:
                if self._guarded(root) or root in ("sys", "course_lib", "builtins"):
                    self._flag(bound, f"{verb} {ast.unparse(bound)}")

    # -- bindings ----------------------------------------------------------------------------

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self._target(target, "assigns to")
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._target(node.target, "changes")
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._target(node.target, "assigns to")
        self.generic_visit(node)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self._target(node.target, "assigns to")
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:
        for target in node.targets:
            self._target(target, "deletes")
        self.generic_visit(node)

    def visit_For(self, node: ast.For) -> None:
        self._target(node.target, "loops with")
        self.generic_visit(node)

    def visit_With(self, node: ast.With) -> None:
        for item in node.items:
            if item.optional_vars is not None:
                self._target(item.optional_vars, "binds")
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if self._guarded(node.name):
            self._flag(node, f"defines a function named {node.name}")
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        if self._guarded(node.name):
            self._flag(node, f"defines a class named {node.name}")
        self.generic_visit(node)

    def visit_Global(self, node: ast.Global) -> None:
        for name in node.names:
            if self._guarded(name):
                self._flag(node, f"declares {name} global")

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            bound = alias.asname or alias.name.split(".")[0]
            if alias.name.split(".")[0] == "builtins":
                self._flag(node, "imports the builtins module")
            elif self._guarded(bound) and not alias.name.startswith("course_lib"):
                self._flag(node, f"rebinds {bound} by an import")
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if module.split(".")[0] == "builtins":
            self._flag(node, "imports from the builtins module")
        for alias in node.names:
            bound = alias.asname or alias.name
            if self._guarded(bound) and not module.startswith("course_lib"):
                self._flag(node, f"rebinds {bound} by an import from {module or '.'}")
        self.generic_visit(node)

    # -- uses --------------------------------------------------------------------------------

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in ("__builtins__", "get_ipython"):
            self._flag(node, f"uses {node.id}")
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in INTERNALS:
            self._flag(node, f"reaches {node.attr}")
        elif _root_name(node) == "sys" and node.attr in SYS_HOOKS:
            self._flag(node, f"uses sys.{node.attr}")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name in ("exec", "eval", "compile", "__import__"):
            self._flag(node, f"calls {name}")
        if name in ("setattr", "delattr") and node.args:
            root = _root_name(node.args[0])
            if self._guarded(root) or root in ("sys", "course_lib", "builtins"):
                self._flag(node, f"calls {name} on {ast.unparse(node.args[0])}")
        if isinstance(node.func, ast.Attribute) and node.func.attr == "reload":
            self._flag(node, "reloads a module")
        elif isinstance(node.func, ast.Attribute) and node.func.attr in MUTATORS:
            root = _root_name(node.func.value)
            if self._guarded(root) or root in ("sys", "course_lib", "builtins"):
                self._flag(node, f"changes {ast.unparse(node.func.value)} in place")
        self.generic_visit(node)


def _python_source(source: str) -> str:
    """Turn IPython syntax (magics, ``!`` commands) into plain Python calls."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)


def _harmless_magics_only(source: str) -> str:
    """Blank the lines of harmless line magics (keeping line numbers) before translating."""
    kept = []
    for line in source.splitlines():
        stripped = line.lstrip()
        word = stripped[1:].split(maxsplit=1)[0] if stripped.startswith("%") else ""
        kept.append("" if word in HARMLESS_MAGICS else line)
    return "\n".join(kept)


def _protected_names(release: NotebookNode) -> set[str]:
    """Names that the course's read-only cells import from ``course_lib``."""
    names: set[str] = set()
    for cell in release.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type != "code" or meta.get("solution") or not meta.get("locked"):
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("course_lib"):
                names.update(alias.asname or alias.name for alias in node.names)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("course_lib"):
                        names.add(alias.asname or alias.name.split(".")[0])
    return names


def suspicious_code(nb: NotebookNode, release: NotebookNode) -> list[str]:
    """Return what in the student's own cells could tamper with grading, in words.

    Args:
        nb: the notebook to be graded (after :func:`course_lib.grading.repair.repair`).
        release: the released notebook, whose read-only cells tell which names the
            course imports (rebinding those is suspicious too).

    Returns:
        One line per finding, e.g. ``"answer cell merge, line 3: assigns to ex.check_merge"``;
        empty when nothing was found.
    """
    protected = _protected_names(release)
    found: list[str] = []
    for number, cell in enumerate(nb.cells, start=1):
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type != "code" or (meta and not meta.get("solution")):
            continue  # restored from the course's source: not the student's code
        where = f"answer cell {meta['grade_id']}" if meta else f"cell {number}"
        try:
            tree = ast.parse(_python_source(_harmless_magics_only(cell.source)))
        except (SyntaxError, ValueError):
            continue  # it fails when it runs, like any broken code
        scanner = _Scanner(protected, where)
        scanner.visit(tree)
        found += scanner.found
    return list(dict.fromkeys(found))
