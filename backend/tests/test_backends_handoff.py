"""The handoff of connections between a worker's requests (heroes.backends.handoff), alone."""

from __future__ import annotations

import asyncio

import pytest

from heroes.backends.handoff import Handoff

pytestmark = pytest.mark.anyio


async def test_a_connection_given_back_goes_to_the_oldest_waiter_first() -> None:
    handoff: Handoff[str] = Handoff()
    first = asyncio.create_task(handoff.wait(1.0))
    second = asyncio.create_task(handoff.wait(1.0))
    await asyncio.sleep(0)
    handoff.give("a")
    handoff.give("b")
    assert (await first, await second) == ("a", "b")
    assert handoff.idle == []
    assert not handoff.waiters


async def test_without_waiters_the_last_connection_given_back_is_taken_first() -> None:
    handoff: Handoff[str] = Handoff()
    handoff.held = 2
    handoff.give("old")
    handoff.give("new")
    assert handoff.idle.pop() == "new"
    assert handoff.take_all() == ["old"]
    assert handoff.held == 1
    assert handoff.idle == []


async def test_a_waiter_is_told_to_ask_the_pool_when_a_connection_went_back_to_it() -> None:
    handoff: Handoff[str] = Handoff()
    waiter = asyncio.create_task(handoff.wait(1.0))
    await asyncio.sleep(0)
    handoff.wake_one()
    assert await waiter is None


async def test_a_wait_ends_with_timeouterror_and_leaves_no_waiter_behind() -> None:
    handoff: Handoff[str] = Handoff()
    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        await handoff.wait(0.05)
    assert 0.04 < asyncio.get_running_loop().time() - started < 0.5
    assert not handoff.waiters
    handoff.give("a")  # nobody waits: it is kept, not lost
    assert handoff.idle == ["a"]


async def test_a_waiter_cancelled_after_the_handover_gives_the_connection_on() -> None:
    handoff: Handoff[str] = Handoff()
    cancelled = asyncio.create_task(handoff.wait(1.0))
    await asyncio.sleep(0)
    handoff.give("a")  # resolved, but the task has not run yet
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert handoff.idle.pop() == "a"
    follower = asyncio.create_task(handoff.wait(1.0))
    cancelled_wait = asyncio.create_task(handoff.wait(1.0))
    await asyncio.sleep(0)
    cancelled_wait.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled_wait
    handoff.give("b")  # the cancelled waiter is skipped
    assert await follower == "b"
