"""The examples in docstrings are tests: every ``>>>`` in ``cropcore`` and ``jobs`` runs here."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import cropcore
import jobs


def _modules(package) -> list[str]:
    names = [package.__name__]
    for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
        if info.name.endswith("__main__"):
            continue
        names.append(info.name)
    return sorted(names)


MODULES = _modules(cropcore) + _modules(jobs)


def test_the_packages_have_doctests_to_run():
    finder = doctest.DocTestFinder()
    with_examples = {name for name in MODULES
                     if any(test.examples for test in finder.find(importlib.import_module(name)))}
    assert {"cropcore.windows", "jobs.runs"} <= with_examples


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_hold(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             verbose=False)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"
