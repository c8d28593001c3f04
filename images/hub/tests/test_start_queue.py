"""The start queue: a bounded number of starts at once, the rest in arrival order, each told its place; and
the spawner's progress messages while it waits."""

import asyncio

import pytest

from jhub_hub.start_queue import StartQueue


async def enter(queue, ticket, log, release):
    """A start that takes a slot, says so, and holds it until `release` is set."""
    async with queue.slot(ticket):
        log.append(ticket)
        await release.wait()


def test_at_most_slots_starts_run_and_the_rest_wait_in_arrival_order():
    async def scenario():
        queue = StartQueue(2)
        log = []
        releases = {name: asyncio.Event() for name in "abcde"}
        tasks = {}
        for name in "abcde":
            tasks[name] = asyncio.create_task(enter(queue, name, log, releases[name]))
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert log == ["a", "b"], "two slots: two starts"
        assert [queue.place(name) for name in "abcde"] == [0, 0, 1, 2, 3]
        assert queue.waiting == 3
        releases["b"].set()
        await asyncio.sleep(0.01)
        assert log == ["a", "b", "c"], "b's slot goes to the first in line"
        assert [queue.place(name) for name in "de"] == [1, 2]
        for name in "acde":
            releases[name].set()
        await asyncio.gather(*tasks.values())
        assert log == list("abcde")
        assert queue.starting == 0
        assert queue.waiting == 0

    asyncio.run(scenario())


def test_a_cancelled_waiter_leaves_the_line_and_takes_no_slot():
    async def scenario():
        queue = StartQueue(1)
        log = []
        release = asyncio.Event()
        first = asyncio.create_task(enter(queue, "first", log, release))
        await asyncio.sleep(0)
        gone = asyncio.create_task(enter(queue, "gone", log, release))
        last = asyncio.create_task(enter(queue, "last", log, release))
        await asyncio.sleep(0)
        assert queue.place("last") == 2
        gone.cancel()  # the user stopped the pending server
        await asyncio.sleep(0)
        assert queue.place("last") == 1
        release.set()
        await asyncio.gather(first, last)
        assert log == ["first", "last"]
        assert queue.starting == 0

    asyncio.run(scenario())


def test_a_slot_handed_to_a_waiter_cancelled_at_that_moment_goes_to_the_next():
    async def scenario():
        queue = StartQueue(1)
        log = []
        release = asyncio.Event()
        first = queue.slot("first")
        await first.__aenter__()
        unlucky = asyncio.create_task(enter(queue, "unlucky", log, release))
        last = asyncio.create_task(enter(queue, "last", log, release))
        await asyncio.sleep(0)
        assert queue.waiting == 2
        # The first start ends (its slot is handed to "unlucky", which has not run since) and, before
        # "unlucky" runs, its user stops the pending server.
        await first.__aexit__(None, None, None)
        unlucky.cancel()
        release.set()
        # A slot lost with the cancelled waiter would leave "last" waiting for ever: bounded here.
        await asyncio.wait_for(asyncio.gather(unlucky, last, return_exceptions=True), 5)
        assert unlucky.cancelled()
        assert log == ["last"]
        assert queue.starting == 0
        assert queue.waiting == 0

    asyncio.run(scenario())


def test_a_queue_needs_a_slot():
    with pytest.raises(ValueError, match="at least one slot"):
        StartQueue(0)
