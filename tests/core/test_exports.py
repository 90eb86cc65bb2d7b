"""The top level: what ``import nbexec`` offers, and that type checkers see all of it.

The names are loaded lazily (PEP 562), so IDEs and mypy only learn their types
from the ``if TYPE_CHECKING:`` imports in ``nbexec/__init__.py``. A name in
``_EXPORTS`` missing there has no type for them; these tests keep the two equal.
"""

from __future__ import annotations

import ast
from pathlib import Path

import nbexec

INIT = Path(nbexec.__file__)


def type_checking_imports() -> dict[str, str]:
    """name -> module of every import under ``if TYPE_CHECKING:`` in nbexec/__init__.py."""
    names: dict[str, str] = {}
    for node in ast.parse(INIT.read_text()).body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom), ast.dump(stmt)
                for alias in stmt.names:
                    names[alias.asname or alias.name] = stmt.module or ""
    return names


def test_type_checkers_see_every_export_from_the_module_that_defines_it() -> None:
    assert type_checking_imports() == nbexec._EXPORTS


def test_the_parser_finds_the_type_checking_block() -> None:
    """Guards the test above: an empty block would make it compare nothing."""
    assert {"launch", "TrainingRun", "TrainingResult", "execute_training_subprocess"} <= set(type_checking_imports())


def test_backend_internals_stay_in_their_modules() -> None:
    """The top level is the seed's names, the run handle and result, the errors and the config."""
    internal = {name for name, module in nbexec._EXPORTS.items()
                if module.startswith(("nbexec.schedulers", "nbexec.runner.job", "nbexec.child.bootstrap"))}

    assert internal == set()
    assert not hasattr(nbexec, "LaunchPlan") and not hasattr(nbexec, "SlurmJob")
