"""Tests for tests/mutation/mutate.py, the mutation-testing driver: that it makes the mutants it
promises, applies exactly one at a time, keeps ids stable, and that a run can fail."""

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "tests" / "mutation" / "mutate.py"


@pytest.fixture(scope="module")
def mutate():
    spec = importlib.util.spec_from_file_location("jobhost_mutate", DRIVER)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


SOURCE = '''
"""Docstring: not mutated."""
LIMIT = 16


def check(token, parts):
    """Docstring: not mutated."""
    if len(token) < LIMIT and parts:
        raise ValueError("short")
    log(token)
    return token.strip()
'''


def test_each_operator_is_offered(mutate):
    found = {m.id: m for m in mutate.enumerate_mutants(SOURCE)}
    assert set(found) == {
        "<module>:int+1#0", "<module>:int-1#0",
        "check:negate#0", "check:compare#0", "check:bool-op#0", "check:drop-raise#0",
        "check:drop-call#0", "check:return-none#0", "check:drop-method#0",
    }
    assert found["<module>:int+1#0"].scope_level
    assert not found["check:compare#0"].scope_level
    # the line is the enclosing statement's first line: what coverage records
    assert found["check:compare#0"].line == 8


def test_exactly_one_change_is_applied(mutate):
    original = ast.unparse(ast.parse(SOURCE))
    for mutant in mutate.enumerate_mutants(SOURCE):
        changed = ast.unparse(mutate.mutated_tree(SOURCE, mutant.index))
        diff = [
            (a, b) for a, b in zip(original.splitlines(), changed.splitlines()) if a != b
        ]
        assert len(diff) == 1 or changed.count("\n") != original.count("\n"), mutant.id
    compare = {m.id: m for m in mutate.enumerate_mutants(SOURCE)}["check:compare#0"]
    assert "len(token) <= LIMIT" in ast.unparse(mutate.mutated_tree(SOURCE, compare.index))


def test_ids_survive_edits_elsewhere(mutate):
    edited = SOURCE.replace("LIMIT = 16", "LIMIT = 16\nOTHER = 3 > 2\n")
    before = {m.id: m.description for m in mutate.enumerate_mutants(SOURCE) if "check" in m.id}
    after = {m.id: m.description for m in mutate.enumerate_mutants(edited) if "check" in m.id}
    assert before == after


def test_annotations_docstrings_and_asserts_are_not_mutated(mutate):
    source = (
        "def f(x: int = 1) -> int | None:\n"
        '    """3 > 2"""\n'
        "    assert x > 0\n"
        "    y: int = 2\n"
        "    return x\n"
    )
    ids = {m.id for m in mutate.enumerate_mutants(source)}
    assert ids == {"<module>:int+1#0", "<module>:int-1#0", "f:int+1#0", "f:int-1#0",
                   "f:return-none#0"}


def _run(*args):
    return subprocess.run(
        [sys.executable, str(DRIVER), *args], cwd=ROOT, capture_output=True, text=True,
        timeout=300,
    )


def test_a_short_run_scores_a_well_tested_module():
    result = _run("jobhost/timeutil.py", "--tests", "tests/test_timeutil.py", "--min-score", "100")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "jobhost/timeutil.py: 100.0% (6/6 killed" in result.stdout


def test_a_run_fails_and_names_the_survivors_when_the_tests_do_not_bite():
    result = _run(
        "jobhost/timeutil.py", "--tests", "tests/test_timeutil.py::test_round_trip",
        "--min-score", "100",
    )
    assert result.returncode == 1, result.stdout + result.stderr
    # the round trip only passes aware values, so the naive-value branch goes unchecked, and
    # it never calls now(), so that mutant is a survivor no test even executes
    assert "jobhost/timeutil.py: 66.7% (4/6 killed" in result.stdout
    assert "survived  from_iso:compare#1" in result.stdout
    assert "uncovered now:return-none#0" in result.stdout


def test_a_module_that_only_runs_at_import_is_tested_by_the_files_that_import_it():
    """interfaces.py's lines all run at import, which coverage credits to no test."""
    result = _run("jobhost/acme/interfaces.py", "--tests", "tests/test_testing.py", "--min-score", "100")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "jobhost/acme/interfaces.py: 100.0% (3/3 killed" in result.stdout
