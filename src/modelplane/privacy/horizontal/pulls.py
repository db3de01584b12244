"""Flower's retry of a message object that is not uploaded yet: milliseconds, not a second.

A Flower message travels as a header (``PushMessages``) followed by its objects, each uploaded on
its own. Whoever polls for it (the ServerApp for replies, a SuperNode for instructions) can see
the header before the objects; Flower then waits ``PULL_INITIAL_BACKOFF`` = 1 s (doubling, up to
10 s) before asking for the object again, although it is usually there a few milliseconds later.
Polling promptly makes hitting that window likely, so nearly every message paid about a second:
once per plain round, four times or more per SecAgg+ round (setup, key shares, masked vectors,
unmasking). That second was the largest part of the secure-aggregation overhead.

Here the retry starts at 20 ms and doubles up to 0.5 s. Flower's limit of 500 tries per object
still applies, so an object that never comes (its sender died mid-upload) is given up after about
four minutes instead of more than an hour.
"""

from __future__ import annotations

from typing import Any

INITIAL_BACKOFF_S = 0.02
BACKOFF_CAP_S = 0.5


def prompt_object_pulls(initial: float = INITIAL_BACKOFF_S, cap: float = BACKOFF_CAP_S) -> None:
    """Make this process's Flower object pulls retry after ``initial`` seconds (doubling up to ``cap``).

    Changes the defaults of the pulling functions themselves, since Flower's callers import them
    by name; checked, so that a Flower upgrade that renames them fails here rather than silently
    bringing the 1 s waits back.
    """
    if not 0 < initial <= cap:
        raise ValueError(f"need 0 < initial <= cap, got {initial}, {cap}")
    from flwr.supercore.inflatable import inflatable_utils

    for name in ("pull_objects", "pull_and_inflate_object_from_tree"):
        fn: Any = getattr(inflatable_utils, name, None)
        defaults = getattr(fn, "__kwdefaults__", None)
        if not defaults or not {"initial_backoff", "backoff_cap"} <= defaults.keys():
            raise RuntimeError(
                f"flwr.supercore.inflatable.inflatable_utils.{name} no longer takes initial_backoff/"
                "backoff_cap (written for flwr 1.42)"
            )
        defaults["initial_backoff"] = initial
        defaults["backoff_cap"] = cap
