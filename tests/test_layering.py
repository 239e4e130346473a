"""The layers, checked statically (with ``ast``, nothing imported): discovery methods never reach into
editing, rendering or image files, and the library never imports click (only ``cli/`` does)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "latentdirs"
#: what a discovery method may not import: methods produce directions, editing consumes them
METHOD_FORBIDDEN = ("latentdirs.edit", "latentdirs.render", "latentdirs.images")


def _imports(path: Path) -> set[str]:
    """Every module a file of the package imports (see :func:`_imports_in`)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    return _imports_in(path.read_text(encoding="utf-8"), package)


def _imports_in(source: str, package: str) -> set[str]:
    """Every module ``source`` (a module of ``package``) imports, absolute, at any depth (imports inside
    functions included); ``from a import b`` yields both ``a`` and ``a.b``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the module's package
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def _modules(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(PACKAGE / "methods"), ids=lambda p: p.name)
def test_methods_do_not_import_editing_rendering_or_images(path):
    bad = sorted(name for name in _imports(path) if _within(name, METHOD_FORBIDDEN))
    assert not bad, f"{path.relative_to(PACKAGE.parent)} imports {bad}"


def test_library_never_imports_click():
    bad = {str(path.relative_to(PACKAGE.parent)): sorted(n for n in _imports(path) if _within(n, ("click",)))
           for path in _modules(PACKAGE)}
    bad = {path: names for path, names in bad.items() if names}
    assert not bad, f"library modules import click (only cli/ may): {bad}"


def test_the_check_sees_what_it_looks_for():
    """The scanner finds plain, from-, relative and function-level imports (else the tests above prove nothing)."""
    assert "latentdirs.directions" in _imports(PACKAGE / "methods" / "sefa.py")
    names = _imports_in("import os\ndef f():\n    import click.testing\n    from ..render import x\n"
                        "    from . import orojar\n", "latentdirs.methods")
    assert {"os", "click.testing", "latentdirs.render", "latentdirs.render.x", "latentdirs.methods.orojar"} <= names
    assert _within("click.testing", ("click",)) and not _within("clicker", ("click",))
    assert _within("latentdirs.render", METHOD_FORBIDDEN) and not _within("latentdirs.rendering", METHOD_FORBIDDEN)
