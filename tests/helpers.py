"""Small assertions shared by several test modules."""

from __future__ import annotations

from collections.abc import Callable

import pytest


def raises_with(error: type[Exception], call: Callable[[], object], *fragments: str) -> str:
    """Run ``call``, require ``error``, and require every fragment (literally) in its message."""
    with pytest.raises(error) as caught:
        call()
    message = str(caught.value)
    missing = [f for f in fragments if f not in message]
    assert not missing, f"{missing} not in {message!r}"
    return message
