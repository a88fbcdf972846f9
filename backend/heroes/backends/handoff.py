"""Connections handed from one request of a worker straight to the next, in front of a pool.

psycopg_pool's checkout and return take its lock and, once every connection is out, park the
request in its queue (a condition and ``asyncio.wait_for``, which wraps each wait in a task).
With 16 requests in flight per worker and 15 connections one request always waits, so every
return went through that queue: 20 us of a GET one's 150 us of worker CPU (measured in-process,
docs/performance.md). Here a returned connection goes to the oldest waiting request of the
worker (a plain future) or onto a stack that the next request takes from; psycopg_pool still
opens, checks, replaces and retires every connection (heroes.backends.postgres gives the stack
back to it every second, before every sweep and at close).
"""

from __future__ import annotations

import asyncio
from collections import deque
from contextlib import suppress
from typing import Generic, TypeVar

C = TypeVar("C")


class Handoff(Generic[C]):
    """``held``: connections out of the pool (with a request, or on the stack); when it reaches
    the pool's maximum the pool has nothing to give and a request waits here instead."""

    __slots__ = ("held", "idle", "waiters")

    def __init__(self) -> None:
        self.held = 0
        self.idle: list[C] = []  # newest last: the connection used last is the warmest
        self.waiters: deque[asyncio.Future[C | None]] = deque()

    def give(self, conn: C) -> None:
        """A sound connection a request is done with: to the oldest waiter, else the stack."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self.idle.append(conn)

    def wake_one(self) -> None:
        """A connection went back to the pool: the oldest waiter asks the pool again."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def take_all(self) -> list[C]:
        """Every connection on the stack (to give back to the pool)."""
        idle, self.idle = self.idle, []
        self.held -= len(idle)
        return idle

    async def wait(self, seconds: float) -> C | None:
        """A connection another request gives within ``seconds`` (None: ask the pool again);
        TimeoutError if none comes."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[C | None] = loop.create_future()
        self.waiters.append(waiter)
        timer = loop.call_later(seconds, _expire, waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            # Cancelled after a connection was handed over: it must not be lost.
            if waiter.done() and not waiter.cancelled():
                conn = waiter.result()
                if conn is not None:
                    self.give(conn)
                else:
                    self.wake_one()
            raise
        finally:
            timer.cancel()
            # give() and wake_one() took it off the queue; a timeout or a cancel did not.
            if waiter.cancelled() or waiter.exception() is not None:
                with suppress(ValueError):
                    self.waiters.remove(waiter)


def _expire(waiter: asyncio.Future[C | None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
