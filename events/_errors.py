"""The one exception for an event that breaks the CloudEvents 1.0 rules."""

from __future__ import annotations

__all__ = ["InvalidEventError"]


class InvalidEventError(ValueError):
    """An event, batch or message that is not a valid CloudEvent.

    ``attribute`` names the offending attribute (or ``"data"``, ``"content-type"``, ``"body"``),
    ``rule`` is a short machine-readable name of the rule that failed, and ``index`` is the
    position of the member when the event came in a batch. The broker turns this into a 400
    whose JSON body carries the same fields.
    """

    def __init__(
        self, attribute: str, rule: str, message: str, *, index: int | None = None
    ) -> None:
        self.attribute = attribute
        self.rule = rule
        self.index = index
        self.detail = message
        where = f"batch[{index}]." if index is not None else ""
        super().__init__(f"{where}{attribute}: {message} ({rule})")

    def in_batch(self, index: int) -> InvalidEventError:
        """The same error, located at member ``index`` of a batch."""
        return InvalidEventError(self.attribute, self.rule, self.detail, index=index)

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready description, the body of a 400 answer."""
        body: dict[str, object] = {
            "error": "invalid CloudEvent",
            "attribute": self.attribute,
            "rule": self.rule,
            "message": str(self),
        }
        if self.index is not None:
            body["index"] = self.index
        return body
