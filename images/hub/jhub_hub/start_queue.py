"""The start queue: at most `slots` user servers start at once on this host; the others wait their turn, in
the order they asked, and each can ask where it stands.

A server's start is CPU-bound (its imports and extensions, about a CPU-second on 2 cores): when a class
arrives in the same minute, starting all of them at once only makes every start slower (and the hub's own
pages with them), and a start that passes its time limit fails. Started a few at a time, each start is as
fast as alone, the machine's cores stay busy, and a waiting user is told how many are ahead instead of
watching a spinner. Nobody is refused and no start fails for waiting: the hub's own limit
(`Spawner.start_timeout`) covers the wait plus the start, so it is set wide, and the start itself keeps
its own limit (`JhubDockerSpawner.start_limit`).
"""

import asyncio
import collections
import contextlib


class StartQueue:
    """A first-come, first-served semaphore whose waiters can see their place in line."""

    def __init__(self, slots):
        if slots < 1:
            raise ValueError("a start queue needs at least one slot")
        self.slots = slots
        self.starting = 0
        self._waiting = collections.deque()

    def place(self, ticket):
        """How many starts are ahead of `ticket` (0: its own start is under way, or it is not queued)."""
        for index, (waiting_ticket, _) in enumerate(self._waiting):
            if waiting_ticket is ticket:
                return index + 1
        return 0

    @property
    def waiting(self):
        """How many starts wait for a slot."""
        return len(self._waiting)

    @contextlib.asynccontextmanager
    async def slot(self, ticket):
        """Holds one of the slots for the body: at once when one is free and nobody waits, else once every
        start that asked earlier has had one. A waiter that is cancelled (the user stopped the pending
        server) leaves the line, and a slot handed to it meanwhile goes to the next."""
        if self.starting < self.slots and not self._waiting:
            self.starting += 1
        else:
            turn = asyncio.get_running_loop().create_future()
            entry = (ticket, turn)
            self._waiting.append(entry)
            try:
                await turn
            except asyncio.CancelledError:
                if entry in self._waiting:
                    self._waiting.remove(entry)
                elif turn.done() and not turn.cancelled():
                    self._release()  # the slot was handed over just before the cancellation
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self):
        # The slot goes straight to the next waiter (the count of starts stays), else it is freed.
        while self._waiting:
            _, turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self.starting -= 1
