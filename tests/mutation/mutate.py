"""Mutation testing for jobhost: does the suite notice when the code is quietly wrong?

    python3 tests/mutation/mutate.py jobhost/certs.py [jobhost/caa.py ...] [options]

For each named module this makes small wrong versions of it ("mutants": a flipped comparison, a
constant off by one, a negated condition, ``and`` for ``or``, a dropped ``return`` value, ``raise``
or call, ``+`` for ``-``...), runs the unit tests that execute the mutated line against each one, and
prints the score (mutants some test noticed / mutants that are not equivalent) and the survivors.

How it stays fast enough to use while writing tests (the unit suite takes ~40 s; a module has a few
hundred mutants):

* One coverage run of the unit tests (``tests/`` without ``tests/integration``), with one coverage
  context per test, maps every line of ``jobhost/`` to the tests that execute it. It is cached in
  ``.mutation/`` under a hash of ``jobhost/`` and the tests, so it is redone only when they change;
  ``--tests tests/test_caa.py`` narrows it to some test files while writing tests for one module
  (then only those files and the shared test modules count for the hash).
* A mutant is run only against the tests that execute its statement; a mutant of module-level or
  class-level code (constants, decorators, defaults) against every test that executes any line of
  the module. A statement no test executes is a survivor without running anything.
* The driver imports pytest and the heavy third-party libraries once, freezes them out of the
  garbage collector, then forks a child per mutant (pytest's entry-point plugins off: ~0.2 s a child).
  The child puts the mutant in front of ``sys.meta_path`` (the file on disk never changes, so this is
  safe beside an editor or another run) and calls ``pytest.main`` with ``-x``. Children run
  ``--jobs`` at a time (default: the number of cores) and are killed after a timeout scaled from
  the selected tests' own durations.

Outcomes: ``killed`` (a test failed or errored), ``timeout`` (counted as killed: the mutant hangs
the tests), ``survived``, ``uncovered`` (a survivor no test executes), ``equivalent`` (listed in
``tests/mutation/equivalent/<module>.toml`` with the reason: it behaves exactly as the original,
so no test could kill it; left out of the score) and ``invalid`` (does not compile; left out).

Tests that spawn a process (the daemon, the store's multi-process helpers) run the code on disk,
not the mutant, so they cannot kill a mutant; they stay in ``tests/integration`` and are not used.

A mutant's id is ``<function or class qualname>:<operator>#<n>`` (``n``: the n-th such mutation in
that scope, in source order), so ids survive edits elsewhere in the file; ``--show ID`` prints its
diff and ``--only ID`` runs just that one. Results are written to ``.mutation/<module>.json``.

Hypothesis tests run derandomized here (profile ``mutation``), so the coverage map and every
mutant see the same examples.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import gc
import hashlib
import importlib.abc
import importlib.util
import json
import os
import select
import signal
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / ".mutation"
EQUIVALENTS = Path(__file__).with_name("equivalent")
UNIT_TESTS = ["tests", "--ignore=tests/integration", "--ignore=tests/mutation"]

# Imported once in the driver, before any fork, so each child starts with them loaded. Nothing of
# jobhost or tests/ is imported here: the child must import the mutant, not a cached original.
PRELOAD = [
    "pytest", "_hypothesis_pytestplugin", "hypothesis", "hypothesis.strategies", "attrs", "attr", "zope.interface",
    "cryptography.x509", "cryptography.hazmat.primitives.asymmetric.ec",
    "cryptography.hazmat.primitives.asymmetric.rsa", "OpenSSL.SSL", "OpenSSL.crypto",
    "josepy", "acme.messages", "acme.challenges", "acme.jws", "treq", "idna",
    "prometheus_client", "twisted.web.resource", "twisted.web.server", "twisted.web.template",
    "twisted.names.client", "twisted.trial.unittest", "twisted.internet.defer",
    "twisted.internet.task", "twisted.application.service", "jsonschema",
    "openapi_spec_validator", "psycopg",
]


# -- mutants -------------------------------------------------------------------------------------

_COMPARE_SWAP = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In,
    ast.Is: ast.IsNot, ast.IsNot: ast.Is,
}
_BINOP_SWAP = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
    ast.FloorDiv: ast.Mult, ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult,
    ast.BitOr: ast.BitAnd, ast.BitAnd: ast.BitOr, ast.LShift: ast.RShift, ast.RShift: ast.LShift,
}
_SYMBOL = {
    ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
    ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not", ast.Add: "+",
    ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**",
    ast.BitOr: "|", ast.BitAnd: "&", ast.LShift: "<<", ast.RShift: ">>", ast.And: "and",
    ast.Or: "or",
}
# "x.strip()" -> "x": normalising calls whose loss is silent until input arrives in another form
_NORMALISING_METHODS = {"strip", "lstrip", "rstrip", "lower", "upper", "casefold"}
# A test that is the same comparison negated adds nothing over flipping its operator.
_SELF_NEGATING = (ast.Eq, ast.NotEq, ast.In, ast.NotIn, ast.Is, ast.IsNot)


@dataclass
class Mutant:
    id: str
    line: int  # first line of the enclosing statement (what coverage records)
    description: str
    scope_level: bool  # module- or class-level code: runs at import, not inside a test
    index: int  # position in traversal order (how --apply finds it again)
    outcome: str = "pending"
    seconds: float = 0.0
    tests: int = 0


class _Walker(ast.NodeTransformer):
    """Enumerates mutation points in source order; with ``target`` set, applies that one."""

    def __init__(self, target: int | None = None):
        self.target = target
        self.found: list[Mutant] = []
        self.scope: list[str] = []
        self.function_depth = 0
        self.statement: list[ast.stmt] = []
        self.counts: dict[tuple[str, str], int] = {}
        self.applied = False

    # bookkeeping

    def _offer(self, node: ast.AST, operator: str, description: str) -> bool:
        """Record a mutation point; True when it is the one to apply."""
        scope = ".".join(self.scope) or "<module>"
        key = (scope, operator)
        n = self.counts.get(key, 0)
        self.counts[key] = n + 1
        statement = self.statement[-1] if self.statement else node
        mutant = Mutant(
            id=f"{scope}:{operator}#{n}",
            line=statement.lineno,
            description=description,
            scope_level=self.function_depth == 0,
            index=len(self.found),
        )
        self.found.append(mutant)
        if self.target == mutant.index:
            self.applied = True
            return True
        return False

    def _scoped(self, node, name, is_function):
        self.scope.append(name)
        self.function_depth += is_function
        try:
            return self.generic_visit(node)
        finally:
            self.scope.pop()
            self.function_depth -= is_function

    def visit_FunctionDef(self, node):
        # decorators and defaults belong to the enclosing scope (they run when the def runs)
        self.statement.append(node)
        node.decorator_list = [self.visit(d) for d in node.decorator_list]
        node.args = self.visit(node.args)
        self.statement.pop()
        self.scope.append(node.name)
        self.function_depth += 1
        try:
            node.body = self._body(node.body)
        finally:
            self.scope.pop()
            self.function_depth -= 1
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        self.statement.append(node)
        node.decorator_list = [self.visit(d) for d in node.decorator_list]
        node.bases = [self.visit(b) for b in node.bases]
        self.statement.pop()
        self.scope.append(node.name)
        try:
            node.body = self._body(node.body)
        finally:
            self.scope.pop()
        return node

    def visit_Module(self, node):
        node.body = self._body(node.body)
        return node

    def _body(self, body):
        out = []
        for i, statement in enumerate(body):
            if i == 0 and _is_docstring(statement):
                out.append(statement)
                continue
            result = self.visit(statement)
            if result is None:
                continue
            out.extend(result if isinstance(result, list) else [result])
        return out or [ast.Pass()]

    def generic_visit(self, node):
        for name, value in ast.iter_fields(node):
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                setattr(node, name, self._body(value))
            elif isinstance(value, list):
                setattr(node, name, [self.visit(v) if isinstance(v, ast.AST) else v for v in value])
            elif isinstance(value, ast.AST):
                setattr(node, name, self.visit(value))
        return node

    def visit(self, node):
        if isinstance(node, ast.stmt) and not isinstance(
            node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
        ):
            if _skipped_statement(node):
                return node
            self.statement.append(node)
            try:
                return super().visit(node)
            finally:
                self.statement.pop()
        return super().visit(node)

    # statements

    def visit_Return(self, node):
        # "return <constant>": the constant's own mutation says more than "return None"
        if node.value is not None and not isinstance(node.value, ast.Constant):
            if self._offer(node, "return-none", "return value dropped (returns None)"):
                return ast.copy_location(ast.Return(value=None), node)
        return self.generic_visit(node)

    def visit_Raise(self, node):
        if self._offer(node, "drop-raise", "raise removed"):
            return ast.copy_location(ast.Pass(), node)
        return self.generic_visit(node)

    def visit_Expr(self, node):
        if isinstance(node.value, (ast.Call, ast.Await)) and not _is_yield(node.value):
            if self._offer(node, "drop-call", f"call removed: {_short(node.value)}"):
                return ast.copy_location(ast.Pass(), node)
        return self.generic_visit(node)

    def visit_Break(self, node):
        if self._offer(node, "break-continue", "break -> continue"):
            return ast.copy_location(ast.Continue(), node)
        return node

    def visit_Continue(self, node):
        if self._offer(node, "continue-break", "continue -> break"):
            return ast.copy_location(ast.Break(), node)
        return node

    def visit_If(self, node):
        node.test = self._negate(node.test)
        return self.generic_visit(node)

    def visit_While(self, node):
        node.test = self._negate(node.test)
        return self.generic_visit(node)

    def visit_IfExp(self, node):
        node.test = self._negate(node.test)
        return self.generic_visit(node)

    def _negate(self, test):
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            return test  # "not x" -> "x" is offered by visit_UnaryOp
        if (
            isinstance(test, ast.Compare)
            and len(test.ops) == 1
            and isinstance(test.ops[0], _SELF_NEGATING)
        ):
            return test
        if isinstance(test, ast.Constant):
            return test  # "while True:"
        if self._offer(test, "negate", f"condition negated: {_short(test)}"):
            return ast.copy_location(ast.UnaryOp(op=ast.Not(), operand=test), test)
        return test

    def visit_AugAssign(self, node):
        swap = _BINOP_SWAP.get(type(node.op))
        if swap and self._offer(
            node, "aug-op", f"{_SYMBOL[type(node.op)]}= -> {_SYMBOL[swap]}="
        ):
            node.op = swap()
            return node
        return self.generic_visit(node)

    # expressions

    def visit_Compare(self, node):
        node = self.generic_visit(node)
        for i, op in enumerate(node.ops):
            swap = _COMPARE_SWAP.get(type(op))
            if swap and self._offer(
                node, "compare", f"{_SYMBOL[type(op)]} -> {_SYMBOL[swap]} in {_short(node)}"
            ):
                node.ops = list(node.ops)
                node.ops[i] = swap()
        return node

    def visit_BoolOp(self, node):
        node = self.generic_visit(node)
        swap = ast.Or if isinstance(node.op, ast.And) else ast.And
        if self._offer(
            node, "bool-op", f"{_SYMBOL[type(node.op)]} -> {_SYMBOL[swap]} in {_short(node)}"
        ):
            node.op = swap()
        return node

    def visit_BinOp(self, node):
        node = self.generic_visit(node)
        if isinstance(node.op, ast.Mod) and isinstance(node.left, ast.Constant) and isinstance(
            node.left.value, (str, bytes)
        ):
            return node  # "%" formatting of a string, not arithmetic
        if isinstance(node.op, (ast.Add, ast.BitOr)) and _is_string_or_type(node):
            return node  # string concatenation, "X | None" annotations
        swap = _BINOP_SWAP.get(type(node.op))
        if swap and self._offer(
            node, "bin-op", f"{_SYMBOL[type(node.op)]} -> {_SYMBOL[swap]} in {_short(node)}"
        ):
            node.op = swap()
        return node

    def visit_Call(self, node):
        node = self.generic_visit(node)
        if (
            isinstance(node.func, ast.Attribute)
            and node.func.attr in _NORMALISING_METHODS
            and not node.args
            and not node.keywords
            and self._offer(node, "drop-method", f".{node.func.attr}() removed: {_short(node)}")
        ):
            return node.func.value
        return node

    def visit_UnaryOp(self, node):
        node = self.generic_visit(node)
        if isinstance(node.op, ast.Not) and self._offer(
            node, "drop-not", f"not removed: {_short(node)}"
        ):
            return node.operand
        if isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
            return node  # a negative literal: the constant mutation covers it
        return node

    def visit_Constant(self, node):
        value = node.value
        if isinstance(value, bool):
            if self._offer(node, "bool", f"{value} -> {not value}"):
                return ast.copy_location(ast.Constant(value=not value), node)
        elif isinstance(value, int):
            if self._offer(node, "int+1", f"{value} -> {value + 1}"):
                return ast.copy_location(ast.Constant(value=value + 1), node)
            if self._offer(node, "int-1", f"{value} -> {value - 1}"):
                return ast.copy_location(ast.Constant(value=value - 1), node)
        elif isinstance(value, float):
            if self._offer(node, "float", f"{value} -> {value + 1}"):
                return ast.copy_location(ast.Constant(value=value + 1), node)
        return node

    # annotations are not behaviour

    def visit_arg(self, node):
        return node

    def visit_AnnAssign(self, node):
        if node.value is not None:
            node.value = self.visit(node.value)
        return node


def _is_docstring(statement):
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    )


def _is_yield(node):
    return isinstance(node, ast.Await) and isinstance(node.value, (ast.Yield, ast.YieldFrom))


def _is_string_or_type(node):
    for side in (node.left, node.right):
        if isinstance(side, (ast.JoinedStr,)):
            return True
        if isinstance(side, ast.Constant) and isinstance(side.value, (str, bytes)):
            return True
        if isinstance(side, ast.Constant) and side.value is None:
            return True
    return False


def _skipped_statement(node):
    """Code that is not behaviour: ``if TYPE_CHECKING:``, ``assert`` (a programmer's note)."""
    if isinstance(node, ast.Assert):
        return True
    if isinstance(node, ast.If) and isinstance(node.test, ast.Name):
        return node.test.id == "TYPE_CHECKING"
    if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
        left = node.test.left
        return isinstance(left, ast.Name) and left.id == "__name__"
    return False


def _short(node, limit=60):
    text = ast.unparse(node).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def enumerate_mutants(source: str) -> list[Mutant]:
    walker = _Walker()
    walker.visit(ast.parse(source))
    return walker.found


def mutated_tree(source: str, index: int) -> ast.Module:
    walker = _Walker(target=index)
    tree = walker.visit(ast.parse(source))
    if not walker.applied:
        raise LookupError(f"no mutant {index}")
    return ast.fix_missing_locations(tree)


def mutant_diff(source: str, mutant: Mutant, path: str) -> str:
    before = ast.unparse(ast.parse(source)).splitlines(keepends=True)
    after = ast.unparse(mutated_tree(source, mutant.index)).splitlines(keepends=True)
    return "".join(difflib.unified_diff(before, after, path, f"{path} ({mutant.id})", n=2))


# -- running tests in forked children -------------------------------------------------------------


class _MutantFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, name, path, code):
        self.name, self.path, self.code = name, path, code

    def find_spec(self, name, path=None, target=None):
        if name != self.name:
            return None
        return importlib.util.spec_from_loader(name, self, origin=str(self.path))

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        module.__file__ = str(self.path)
        exec(self.code, module.__dict__)


def module_name(path: Path) -> str:
    relative = path.resolve().relative_to(ROOT).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _quiet():
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)


def _pytest_args(tests):
    return [
        *tests, "-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "--no-header",
        "-p", "no:warnings", "-W", "ignore", "-p", "_hypothesis_pytestplugin",
    ]


def _child_env():
    os.environ["HYPOTHESIS_PROFILE"] = "mutation"
    # Plugins found through entry points (schemathesis, anyio, benchmark...) cost ~1 s of imports
    # and assertion rewriting per child, and the unit tests use none of them.
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    os.chdir(ROOT)


def start_mutant(path: Path, source: str, mutant: Mutant, tests: list[str]) -> int:
    """Fork a child that runs ``tests`` against ``mutant``; returns its pid."""
    try:
        code = compile(mutated_tree(source, mutant.index), str(path), "exec")
    except (SyntaxError, ValueError, TypeError):
        return -1
    pid = os.fork()
    if pid:
        return pid
    try:
        os.setpgid(0, 0)
        _child_env()
        _quiet()
        sys.meta_path.insert(0, _MutantFinder(module_name(path), path, code))
        try:
            importlib.import_module(module_name(path))
        except Exception:
            os._exit(1)  # a mutant that cannot even be imported fails every test that uses it
        import pytest

        status = pytest.main(_pytest_args(tests))
        os._exit(int(status))
    except BaseException:
        os._exit(70)


class _ContextPlugin:
    """One coverage context per test, and each test's duration."""

    def __init__(self, cov):
        self.cov = cov
        self.durations = {}
        self.failed = set()

    def pytest_runtest_protocol(self, item, nextitem):
        self.cov.switch_context(item.nodeid)
        self._start = time.monotonic()

    def pytest_runtest_logreport(self, report):
        if report.failed:
            self.failed.add(report.nodeid)
        if report.when == "teardown":
            self.durations[report.nodeid] = time.monotonic() - self._start
            self.cov.switch_context("")


def coverage_map(test_args: list[str]) -> dict:
    """{file: {line: [test ids]}} for every file of jobhost/, and test durations (cached)."""
    # keyed by the test selection, then by the content of everything it can depend on: jobhost/,
    # the shared test modules, and the named test files (all of tests/ for the default selection)
    selection = hashlib.sha256(" ".join(test_args).encode()).hexdigest()[:8]
    named = [ROOT / arg.split("::")[0] for arg in test_args if not arg.startswith("-")]
    files = set((ROOT / "jobhost").rglob("*.py")) | set((ROOT / "tests").glob("*.py"))
    for path in named:
        files |= set(path.rglob("*.py")) if path.is_dir() else {path}
    files = {f for f in files if f.is_file() and (
        not f.name.startswith("test_") or f in named or any(p in f.parents for p in named))}
    digest = hashlib.sha256()
    for file in sorted(files):
        digest.update(str(file.relative_to(ROOT)).encode())
        digest.update(file.read_bytes())
    cache = STATE / f"coverage-{selection}-{digest.hexdigest()[:16]}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    STATE.mkdir(exist_ok=True)
    for old in STATE.glob(f"coverage-{selection}-*.json"):
        old.unlink()
    print(f"mapping lines to tests (coverage run of {' '.join(test_args)}) ...", flush=True)
    started = time.monotonic()
    out = cache.with_suffix(".tmp")
    pid = os.fork()
    if pid == 0:
        try:
            _child_env()
            _quiet()
            import coverage
            import pytest

            cov = coverage.Coverage(
                data_file=None, include=[str(ROOT / "jobhost" / "*")], config_file=False
            )
            plugin = _ContextPlugin(cov)
            cov.start()
            pytest.main(
                ["-p", "no:cacheprovider", "-o", "addopts=", "-p", "_hypothesis_pytestplugin",
                 *test_args],
                plugins=[plugin],
            )
            cov.stop()
            data = cov.get_data()
            lines = {}
            for file in data.measured_files():
                key = str(Path(file).resolve().relative_to(ROOT))
                lines[key] = {
                    str(line): sorted(contexts)
                    for line, contexts in data.contexts_by_lineno(file).items()
                }
            out.write_text(json.dumps(
                {"lines": lines, "durations": plugin.durations, "failed": sorted(plugin.failed)}
            ))
            os._exit(0)
        except BaseException:
            os._exit(70)
    _, status = os.waitpid(pid, 0)
    if status != 0 or not out.exists():
        raise SystemExit("the coverage run failed; run the tests on their own to see why")
    out.rename(cache)
    print(f"  done in {time.monotonic() - started:.0f} s", flush=True)
    return json.loads(cache.read_text())


# -- the run --------------------------------------------------------------------------------------


@dataclass
class Run:
    path: Path
    source: str
    mutants: list[Mutant]
    equivalent: dict[str, str] = field(default_factory=dict)


def equivalents_file(relative: str) -> Path:
    """``jobhost/store/sql.py`` -> ``tests/mutation/equivalent/jobhost.store.sql.toml``."""
    return EQUIVALENTS / (relative.removesuffix(".py").replace("/", ".") + ".toml")


def load_equivalents(relative: str) -> dict[str, str]:
    """``"<mutant id>" = "why no test can tell it from the original"``, one file per module."""
    path = equivalents_file(relative)
    if not path.exists():
        return {}
    with path.open("rb") as handle:
        table = tomllib.load(handle)
    for mutant_id, reason in table.items():
        if not isinstance(reason, str) or len(reason.strip()) < 10:
            raise SystemExit(f"{path}: {mutant_id} needs a reason (a sentence)")
    return table


def importing_test_files(module: str, test_args: list[str]) -> list[str]:
    """The unit test files (of the coverage run's selection) whose source names ``module``.

    For a module whose every line runs at import (an interface, constants): coverage records
    those lines before any test starts, so no test "executes" them; the tests that import
    the module are the ones that can notice its mutants.
    """
    named = [ROOT / arg.split("::")[0] for arg in test_args if not arg.startswith("-")]
    if named == [ROOT / "tests"]:
        named = sorted((ROOT / "tests").glob("test_*.py"))
    dotted = module.replace("/", ".").removesuffix(".py")
    package, _, leaf = dotted.rpartition(".")
    found = []
    for path in named:
        if path.is_file() and path.suffix == ".py":
            text = path.read_text()
            if dotted in text or f"from {package} import {leaf}" in text:
                found.append(str(path.relative_to(ROOT)))
    return found


def select_tests(mutant: Mutant, lines: dict, durations: dict, failed: set, importers=()) -> list[str]:
    if mutant.scope_level:
        chosen = {test for tests in lines.values() for test in tests}
        if not chosen - {""}:
            chosen = set(importers)
    else:
        chosen = set(lines.get(str(mutant.line), []))
    chosen.discard("")
    chosen -= failed
    # slowest last: with -x, a fast failing test ends the run sooner
    return sorted(chosen, key=lambda test: (durations.get(test, 1.0), test))


def execute(run: Run, cover: dict, jobs: int, budget: float, timeout_factor: float, test_args=None) -> None:
    relative = str(run.path.relative_to(ROOT))
    lines = cover["lines"].get(relative, {})
    durations = dict(cover["durations"])
    importers = importing_test_files(relative, test_args or UNIT_TESTS)
    for file in importers:  # a whole file's time, for the timeout
        durations[file] = sum(t for test, t in cover["durations"].items() if test.startswith(file + "::")) or 1.0
    failed = set(cover["failed"])
    queue = []
    for mutant in run.mutants:
        if mutant.id in run.equivalent:
            mutant.outcome = "equivalent"
            continue
        tests = select_tests(mutant, lines, durations, failed, importers)
        mutant.tests = len(tests)
        if not tests:
            mutant.outcome = "uncovered"
            continue
        expected = sum(durations.get(test, 1.0) for test in tests)
        queue.append((mutant, tests, timeout_factor * expected + 5.0))
    started = time.monotonic()
    running: dict[int, tuple[Mutant, float, float]] = {}
    done = 0
    total = len(queue)
    while queue or running:
        while queue and len(running) < jobs and time.monotonic() - started < budget:
            mutant, tests, timeout = queue.pop(0)
            pid = start_mutant(run.path, run.source, mutant, tests)
            if pid < 0:
                mutant.outcome = "invalid"
                done += 1
                continue
            running[pid] = (mutant, time.monotonic(), timeout)
        if not running:
            break
        pid, status = _wait_any(running)
        if pid is None:
            continue
        mutant, began, _ = running.pop(pid)
        mutant.seconds = time.monotonic() - began
        if status == "timeout":
            mutant.outcome = "timeout"
        else:
            code = os.waitstatus_to_exitcode(status)
            mutant.outcome = {0: "survived", 1: "killed", 2: "killed"}.get(code, f"error({code})")
        done += 1
        if sys.stderr.isatty():
            print(f"\r  {done}/{total} run", end="", file=sys.stderr, flush=True)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    for mutant, _, _ in queue:
        mutant.outcome = "not run (budget)"


def _wait_any(running):
    """Reap one finished child, or kill one past its timeout; (pid, status) or (None, None)."""
    deadline = min(began + timeout for _, began, timeout in running.values())
    while True:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid and pid in running:
            return pid, status
        now = time.monotonic()
        if now >= deadline:
            for pid, (_, began, timeout) in running.items():
                if now >= began + timeout:
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    os.waitpid(pid, 0)
                    return pid, "timeout"
            return None, None
        select.select([], [], [], min(0.02, deadline - now))


def score(mutants: list[Mutant]) -> tuple[int, int]:
    counted = [m for m in mutants if m.outcome not in ("equivalent", "invalid")]
    killed = [m for m in counted if m.outcome in ("killed", "timeout")]
    return len(killed), len(counted)


def report(run: Run, verbose: bool) -> dict:
    relative = str(run.path.relative_to(ROOT))
    killed, counted = score(run.mutants)
    outcomes: dict[str, int] = {}
    for mutant in run.mutants:
        outcomes[mutant.outcome] = outcomes.get(mutant.outcome, 0) + 1
    percent = 100.0 * killed / counted if counted else 100.0
    summary = ", ".join(f"{n} {name}" for name, n in sorted(outcomes.items()))
    print(f"{relative}: {percent:.1f}% ({killed}/{counted} killed; {summary})")
    source_lines = run.source.splitlines()
    for mutant in run.mutants:
        if mutant.outcome in ("survived", "uncovered") or (
            verbose and mutant.outcome not in ("killed", "timeout")
        ):
            text = source_lines[mutant.line - 1].strip()
            print(f"  {mutant.outcome:9} {mutant.id}  line {mutant.line}: {mutant.description}")
            if verbose:
                print(f"            {text}")
    stale = set(run.equivalent) - {m.id for m in run.mutants}
    for mutant_id in sorted(stale):
        print(f"  stale equivalent entry (no such mutant now): {mutant_id}")
    return {
        "module": relative, "score": round(percent, 1), "killed": killed, "counted": counted,
        "outcomes": outcomes,
        "mutants": [vars(m) for m in run.mutants],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Mutation testing of jobhost modules against the unit tests.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("modules", nargs="+", help="files under jobhost/, e.g. jobhost/caa.py")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--budget", type=float, default=3600.0,
                        help="seconds per module after which no new mutant starts (default 3600)")
    parser.add_argument("--timeout-factor", type=float, default=5.0,
                        help="a mutant is killed after factor x its tests' usual time + 5 s")
    parser.add_argument("--tests", nargs="+", metavar="TEST",
                        help="test files or ids for the coverage run (default: the unit tests)")
    parser.add_argument("--only", metavar="ID", action="append",
                        help="run only the mutant(s) with this id")
    parser.add_argument("--show", metavar="ID", action="append", help="print a mutant's diff")
    parser.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    parser.add_argument("--min-score", type=float, default=None,
                        help="exit 1 when a module scores below this percentage")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)

    runs = []
    for name in args.modules:
        path = (ROOT / name).resolve()
        if not path.is_file() or ROOT / "jobhost" not in path.parents:
            parser.error(f"{name}: not a module file under jobhost/")
        source = path.read_text()
        mutants = enumerate_mutants(source)
        relative = str(path.relative_to(ROOT))
        runs.append(Run(path, source, mutants, load_equivalents(relative)))

    if args.show or args.list:
        for run in runs:
            relative = str(run.path.relative_to(ROOT))
            for mutant in run.mutants:
                if args.list:
                    print(f"{relative} {mutant.id} line {mutant.line}: {mutant.description}")
                elif mutant.id in args.show:
                    print(mutant_diff(run.source, mutant, relative))
        return 0

    # The checkout's jobhost/, not a copy pip installed into site-packages (CI installs the
    # project without -e): coverage measures, and the mutants replace, the files under ROOT.
    sys.path.insert(0, str(ROOT))
    spec = importlib.util.find_spec("jobhost")
    if spec is None or Path(spec.origin).resolve().parent != ROOT / "jobhost":
        raise SystemExit(f"jobhost imports from {spec and spec.origin}, not from {ROOT / 'jobhost'}")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    for module in PRELOAD:
        try:
            __import__(module)
        except ImportError:
            pass
    # Everything loaded so far lives as long as the children: keep it out of their collections
    # (pytest's own gc.collect calls cost ~0.6 s per child otherwise).
    gc.freeze()
    cover = coverage_map(args.tests or UNIT_TESTS)
    STATE.mkdir(exist_ok=True)
    worst = 100.0
    for run in runs:
        if args.only:
            run.mutants = [m for m in run.mutants if m.id in args.only]
        began = time.monotonic()
        execute(run, cover, args.jobs, args.budget, args.timeout_factor, args.tests)
        result = report(run, args.verbose)
        result["seconds"] = round(time.monotonic() - began, 1)
        print(f"  ({result['seconds']:.0f} s, {len(run.mutants)} mutants)")
        worst = min(worst, result["score"])
        if not args.only:
            name = str(run.path.relative_to(ROOT)).replace("/", ".")
            (STATE / f"{name}.json").write_text(json.dumps(result, indent=1))
    if args.min_score is not None and worst < args.min_score:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
