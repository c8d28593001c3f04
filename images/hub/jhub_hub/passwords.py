"""Password hashes of the hub's own accounts: bcrypt at the cost JHUB_BCRYPT_COST sets, computed off the
event loop on a bounded pool of threads.

The cost: 10 by default, the least OWASP's Password Storage Cheat Sheet accepts for bcrypt ("a work
factor of 10 or more"). Each step doubles the work of every login and signup: 12, bcrypt's own default
and NativeAuthenticator's, takes four times as long (about 0.2 CPU-s on this project's reference machine,
0.3 on slower ones), and when a class arrives at once those seconds queue up on the hub's cores in front
of every login. The setting refuses less than 10; an admin may raise it, and a hash made at a lower cost
than the setting is made again at the user's next login (a higher one is kept: it is no weaker).

The pool: bcrypt (>= 5) releases the GIL, so a hash runs beside the event loop, but as many hashes at once
as asyncio's default pool allows (cores + 4) would take every core from the loop, the proxy and the
servers starting. Here at most `cores - 1` (at least one) hash at a time; the others wait their turn.
"""

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

import bcrypt

# OWASP's minimum for bcrypt, and the default.
MIN_COST = 10
# 2**16 rounds take several seconds a login: past that a setting is a mistake, not a policy.
MAX_COST = 16
COST_VARIABLE = "JHUB_BCRYPT_COST"


def hash_password(password, cost=MIN_COST):
    """A new bcrypt hash of `password` at `cost` (callers pass the setting, `Settings.bcrypt_cost`); blocking."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost))


def password_matches(password, hashed):
    """Whether `password` hashes to `hashed` (blocking), as NativeAuthenticator's is_valid_password decides."""
    return bcrypt.checkpw(password.encode(), hashed)


def cost_of(hashed):
    """The cost a bcrypt hash was made at (`$2b$12$…` → 12), None for anything else."""
    parts = hashed.split(b"$") if isinstance(hashed, bytes) else hashed.encode().split(b"$")
    if len(parts) < 4 or not parts[2].isdigit():
        return None
    return int(parts[2])


def hashing_threads():
    """At most one hash per core but one, and at least one."""
    return max(1, (os.cpu_count() or 2) - 1)


_pool = None


async def off_the_loop(function, *args):
    """`function(*args)` on the hashing pool, awaited."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(hashing_threads(), thread_name_prefix="bcrypt")
    return await asyncio.get_running_loop().run_in_executor(_pool, function, *args)
