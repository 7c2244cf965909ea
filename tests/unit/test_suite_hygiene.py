"""The suite's own rules: no fixed sleep stands in for waiting on a condition, a database
connection a failing test leaves open cannot keep pytest from exiting, and a hung test fails."""

from __future__ import annotations

import ast
from pathlib import Path

import aiosqlite
import pytest

TESTS = Path(__file__).resolve().parents[1]
SLEEP_MODULES = {"asyncio", "time", "anyio"}


def fixed_sleeps(source: str) -> list[int]:
    """Line numbers of sleeps that wait a fixed time: any `sleep(...)` of asyncio, time or anyio
    outside a `while` loop (a poll that checks its condition between naps), except `sleep(0)`,
    which only yields to the event loop."""
    found: list[int] = []

    def visit(node: ast.AST, in_poll: bool) -> None:
        if isinstance(node, ast.Call) and _is_sleep(node.func) and not in_poll:
            zero = (
                len(node.args) == 1
                and isinstance(node.args[0], ast.Constant)
                and node.args[0].value == 0
            )
            if not zero:
                found.append(node.lineno)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            in_poll = False  # a function defined inside a loop is not itself a poll
        for child in ast.iter_child_nodes(node):
            visit(child, in_poll or isinstance(node, ast.While))

    visit(ast.parse(source), False)
    return found


def _is_sleep(func: ast.expr) -> bool:
    if isinstance(func, ast.Attribute) and func.attr == "sleep":
        return isinstance(func.value, ast.Name) and func.value.id in SLEEP_MODULES
    return isinstance(func, ast.Name) and func.id == "sleep"


def test_no_test_waits_a_fixed_time_for_something_to_happen() -> None:
    offenders = [
        f"{path.relative_to(TESTS.parent)}:{line}"
        for path in sorted(TESTS.rglob("*.py"))
        for line in fixed_sleeps(path.read_text())
    ]
    assert offenders == [], (
        "wait for the condition with a deadline (tests.support.live.eventually) instead of "
        f"sleeping: {offenders}"
    )


def test_the_sleep_rule_tells_a_fixed_wait_from_a_poll() -> None:
    source = """
import asyncio, time
from asyncio import sleep

async def waits():
    await asyncio.sleep(0.1)  # flagged
    time.sleep(1)  # flagged
    await sleep(0.2)  # flagged
    await asyncio.sleep(0)  # a yield
    while not done():
        await asyncio.sleep(0.01)  # a poll
        def inner():
            time.sleep(5)  # flagged: not the loop's own nap
"""
    assert fixed_sleeps(source) == [6, 7, 8, 13]


async def test_an_unclosed_sqlite_connection_cannot_keep_pytest_from_exiting(tmp_path) -> None:
    connection = await aiosqlite.connect(str(tmp_path / "left-open.db"))
    try:
        assert connection._thread.daemon  # tests/conftest.py makes it so for the whole run
    finally:
        await connection.close()


def test_a_hung_test_fails_instead_of_holding_the_run(pytestconfig: pytest.Config) -> None:
    # pytest-timeout, configured in pyproject.toml for every test of the run.
    assert pytestconfig.pluginmanager.hasplugin("timeout")
    assert 0 < float(pytestconfig.getini("timeout")) <= 300
