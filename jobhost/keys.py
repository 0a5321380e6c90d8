"""
Making private keys without blocking the reactor.

What one key costs on this project's 2-core machine (``python bench/hotpath.py``-style
timing of :func:`jobhost.certs.generate_private_key`):

============  ===============  ================================
key type      typical          where it runs
============  ===============  ================================
ecdsa-p256    ~0.1 ms          on the calling thread
ecdsa-p384    ~0.5 ms          on the calling thread
rsa-2048      ~50-150 ms       a worker thread
rsa-4096      ~1.1 s (1.5 max) a worker thread
============  ===============  ================================

RSA key generation searches for primes and its time varies widely; run on the
reactor thread it would stall every handshake on the machine for that long.
ECDSA keys cost less than handing work to a thread, so they are made inline.

A *key generator* is ``key_type -> Deferred[private key]``; the issuing
service takes one as a parameter (tests pass :func:`inline_keys`).
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.threads import deferToThreadPool

from jobhost.certs import generate_private_key

#: Key types whose generation is slow enough to need a worker thread.
SLOW_KEY_TYPES = frozenset(("rsa-2048", "rsa-4096"))

KeyGenerator = Callable[[str], Deferred]


def inline_keys(key_type: str) -> Deferred:
    """Make the key on the calling thread (for tests and tools; blocks for RSA)."""
    return maybeDeferred(generate_private_key, key_type)


def threaded_keys(reactor, threadpool=None) -> KeyGenerator:
    """A key generator that makes slow (RSA) keys in ``threadpool`` (default: the reactor's).

    Args:
        reactor: Provides ``callFromThread`` and ``getThreadPool``.
        threadpool: The pool to use instead of the reactor's.
    """

    def generate(key_type: str) -> Deferred:
        if key_type not in SLOW_KEY_TYPES:
            return inline_keys(key_type)
        pool = threadpool if threadpool is not None else reactor.getThreadPool()
        return deferToThreadPool(reactor, pool, generate_private_key, key_type)

    return generate


__all__ = ["KeyGenerator", "SLOW_KEY_TYPES", "inline_keys", "threaded_keys"]
