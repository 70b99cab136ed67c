"""Starting afresh in a forked child process.

A process that forks after building a mesh (gunicorn ``--preload``, multiprocessing's ``fork``
start method, Celery's prefork pool) gives the child copies of the parent's pooled sockets,
locks that some thread may have held at the moment of the fork, and none of its threads: the
config watcher, certificate renewal, mirror workers and key refreshes would silently stop.
Objects that own such things register a method here; in the child it runs first, so they drop
what belongs to the parent (without closing the parent's connections) and restart their threads.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from pymesh.callbacks import WeakCallbacks

__all__ = ["after_fork_in_child"]

_hooks = WeakCallbacks()


def after_fork_in_child(method: Callable[[], None]) -> None:
    """Call the bound ``method`` in every forked child, for as long as its object lives."""
    _hooks.add(method)


def _run_hooks() -> None:
    _hooks.after_fork()
    _hooks.call()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_run_hooks)
