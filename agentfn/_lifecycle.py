"""``async with`` for what must be closed, in one place: leaving the block calls ``aclose()``.

Two shapes: :class:`Closing` for an object that is open once built (a subscription that has
joined), :class:`Started` for one that ``start()`` opens (a log, a sender, a server, an app).
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["Closing", "Started"]


class Closing:
    """``async with obj:`` returns the object and calls its :meth:`aclose` on the way out."""

    __slots__ = ()

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class Started(Closing):
    """``async with obj:`` calls :meth:`start` first, then :meth:`aclose` on the way out."""

    __slots__ = ()

    async def start(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self
