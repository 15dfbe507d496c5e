"""Callbacks that do not keep their owner alive.

Unicorn keeps every hook's Python callable, and devices keep the machine's callbacks. If those
held their owners strongly, every boot would sit in a reference cycle with its Unicorn engine
(hundreds of MB of translation cache and guest RAM) until a full garbage collection, or for
ever when a finalizer's registry holds a piece of the cycle. A weak callback breaks the cycle:
the owner is freed by reference counting as soon as its last user lets go.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any


def weak_callback(method: Callable[..., Any], dead: Any = None) -> Callable[..., Any]:
    """A plain function that calls bound `method` while its object lives, else returns `dead`."""
    ref = weakref.WeakMethod(method)

    def call(*args: Any) -> Any:
        target = ref()
        return dead if target is None else target(*args)

    return call
