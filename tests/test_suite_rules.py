"""Rules the test modules themselves keep, checked on their source: each would otherwise let a
test pass without checking anything."""

from __future__ import annotations

import ast

import pytest
from support import TESTS

MODULES = sorted(TESTS.glob("test_*.py"))


def _tree(path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _is_given(decorator: ast.expr) -> bool:
    f = decorator.func if isinstance(decorator, ast.Call) else decorator
    return (isinstance(f, ast.Name) and f.id == "given") or (isinstance(f, ast.Attribute) and f.attr == "given")


def _own_returns(fn: ast.FunctionDef):
    """The return statements of ``fn`` itself, not of functions or classes defined inside it."""
    todo = list(fn.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Return):
            yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))


def test_the_rules_see_every_test_module():
    assert len(MODULES) >= 25 and TESTS / "test_suite_rules.py" in MODULES


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_pytestmark_is_assigned_once(path):
    """A second module-level ``pytestmark = ...`` silently drops the markers of the first."""
    lines = [
        node.lineno
        for node in _tree(path).body
        for target in (node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)])
        if isinstance(target, ast.Name) and target.id == "pytestmark"
    ]
    assert len(lines) <= 1, f"{path.name}: pytestmark assigned on lines {lines}; use one list"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_hypothesis_examples_are_discarded_with_assume_not_return(path):
    """An early ``return`` counts the example as passed; ``assume`` discards it, and Hypothesis
    reports a test that discards too many."""
    bad = [
        f"{fn.name} line {ret.lineno}"
        for fn in ast.walk(_tree(path))
        if isinstance(fn, ast.FunctionDef) and any(_is_given(d) for d in fn.decorator_list)
        for ret in _own_returns(fn)
    ]
    assert bad == [], f"{path.name}: early return in a @given test: {bad}"


@pytest.mark.parametrize("path", sorted(TESTS.glob("*.py")), ids=lambda p: p.name)
def test_helpers_are_imported_by_module_name_not_as_a_tests_package(path):
    """The tests folder is not a package: ``from tests.support import ...`` works only when the
    suite runs as ``python -m pytest`` from the checkout, and stops a plain ``pytest`` (which puts
    the tests folder, not the checkout, on the path) at collection."""
    bad = [
        f"line {node.lineno}"
        for node in ast.walk(_tree(path))
        if (isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "tests")
        or (isinstance(node, ast.Import) and any(a.name.split(".")[0] == "tests" for a in node.names))
    ]
    assert bad == [], f"{path.name}: imports from a 'tests' package at {bad}"
