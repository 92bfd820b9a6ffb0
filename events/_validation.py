"""CloudEvents 1.0 context-attribute rules, checked once at the edge of the system.

Every function here takes plain data and either returns the canonical attribute mapping or
raises :class:`InvalidEventError` naming the attribute and the rule. Nothing of the transport
is known here; the HTTP and Kafka bindings call in after they have decoded their framing.
"""

from __future__ import annotations

import base64
import calendar
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final, TypeAlias

from agentfn.events._errors import InvalidEventError

__all__ = [
    "CONTEXT_ATTRIBUTES",
    "REQUIRED_ATTRIBUTES",
    "SPEC_VERSION",
    "AttributeValue",
    "attribute_text",
    "check_attributes",
    "format_timestamp",
    "is_uri",
    "is_uri_reference",
    "require_attributes",
    "validate_attributes",
]

#: The one version accepted. 0.3 is refused with a clear error rather than up-converted: Knative
#: Eventing, the cloudevents SDKs and every agent here emit 1.0, and 0.3's ``schemaurl`` and
#: ``datacontentencoding`` would otherwise need a lossy mapping on every hop.
SPEC_VERSION: Final = "1.0"
REQUIRED_ATTRIBUTES: Final = ("id", "source", "specversion", "type")
CONTEXT_ATTRIBUTES: Final = frozenset(
    {"id", "source", "specversion", "type", "datacontenttype", "dataschema", "subject", "time"}
)

#: What an attribute value may be once decoded: the CloudEvents type system maps onto these
#: three (Binary, URI, URI-reference, URI-template and Timestamp travel as their string form).
AttributeValue: TypeAlias = str | bool | int

_DAYS_IN_MONTH: Final = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1

_NAME = re.compile(r"[a-z0-9]{1,20}")

# RFC 3986: the characters a URI-reference may hold, and '%' only as a %XX escape.
_URI_CHARS = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?#\[\]]|%[0-9A-Fa-f]{2})*")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")

# RFC 3339 section 5.6 (date-time); the ranges are checked after the match.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?(?:[Zz]|([+-])(\d{2}):(\d{2}))",
    re.ASCII,  # DIGIT is 0-9 only; without this \d takes any Unicode digit
)

# RFC 2046 / RFC 7231 media type: type "/" subtype *( OWS ";" OWS parameter ).
# A quoted-string holds visible ASCII, space and tab only (RFC 2045 values are ASCII; no
# obs-text, no controls), so the media type is always a valid Content-Type header value.
_TCHARS = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e]|\\[\t \x21-\x7e])*"'
_MEDIA_TYPE = re.compile(
    rf"{_TCHARS}/{_TCHARS}(?:[ \t]*;[ \t]*(?:{_TCHARS}=(?:{_TCHARS}|{_QUOTED}))?)*[ \t]*"
)


def is_uri_reference(value: str) -> bool:
    """Whether ``value`` is an RFC 3986 URI-reference (absolute URI or relative reference)."""
    if not _URI_CHARS.fullmatch(value) or value.count("#") > 1:
        return False
    if _SCHEME.match(value):
        return True
    # A relative reference whose first segment holds ':' would read as a scheme (RFC 3986 4.2).
    first_segment = re.split(r"[/?#]", value, maxsplit=1)[0]
    return ":" not in first_segment


def is_uri(value: str) -> bool:
    """Whether ``value`` is an absolute RFC 3986 URI (it has a scheme)."""
    return (
        bool(_SCHEME.match(value))
        and _URI_CHARS.fullmatch(value) is not None
        and (value.count("#") <= 1)
    )


def _is_rfc3339(value: str) -> bool:
    match = _RFC3339.fullmatch(value)
    if match is None:
        return False
    year, month, day, hour, minute, second = map(int, match.group(1, 2, 3, 4, 5, 6))
    if not 1 <= month <= 12 or day < 1:
        return False
    if day > _DAYS_IN_MONTH[month] and not (month == 2 and day == 29 and calendar.isleap(year)):
        return False
    # 60 is a leap second, which RFC 3339 allows.
    if hour > 23 or minute > 59 or second > 60:
        return False
    if match.group(8) is not None:
        return int(match.group(9)) <= 23 and int(match.group(10)) <= 59
    return True


def format_timestamp(moment: datetime) -> str:
    """An RFC 3339 timestamp in UTC with a ``Z`` suffix (naive datetimes are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def attribute_text(value: object) -> str:
    """The canonical string of an attribute value, as the bindings write it and filters compare.

    The CloudEvents type system gives each type one string form: Boolean ``true``/``false``,
    Integer in decimal, Timestamp in RFC 3339 (a ``datetime`` is written in UTC with ``Z``),
    Binary in base64 (RFC 4648), String, URI and URI-reference as they are. Every comparison of
    an attribute with text goes through here, so an event matches the same filter whether its
    Boolean arrived as JSON ``true`` (structured mode, in process) or as the header ``true``.
    """
    if isinstance(value, str):
        return value
    # bool first: it is a subclass of int, and str(True) is "True".
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"a {type(value).__name__} is not a CloudEvents attribute value")


def _require_string(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidEventError(name, "type", f"must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidEventError(name, "non-empty", "must be a non-empty string")
    return value


def _check_context(name: str, value: object) -> str:
    text = _require_string(name, value)
    if name == "specversion":
        if text != SPEC_VERSION:
            raise InvalidEventError(
                name, "unsupported-specversion", f"{text!r} is not supported; only 1.0 is"
            )
    elif name == "source":
        if not is_uri_reference(text):
            raise InvalidEventError(name, "uri-reference", f"{text!r} is not a URI-reference")
    elif name == "dataschema":
        if not is_uri(text):
            raise InvalidEventError(name, "uri", f"{text!r} is not an absolute URI")
    elif name == "time":
        if not _is_rfc3339(text):
            raise InvalidEventError(name, "rfc3339", f"{text!r} is not an RFC 3339 timestamp")
    elif name == "datacontenttype" and not _MEDIA_TYPE.fullmatch(text):
        raise InvalidEventError(name, "media-type", f"{text!r} is not an RFC 2046 media type")
    return text


def _check_extension(name: str, value: object) -> AttributeValue:
    # bool first: it is a subclass of int but a distinct CloudEvents type.
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if not _INT32_MIN <= value <= _INT32_MAX:
            raise InvalidEventError(name, "integer-range", f"{value} is outside 32-bit range")
        return value
    if isinstance(value, datetime):
        return format_timestamp(value)
    raise InvalidEventError(
        name,
        "extension-type",
        f"a {type(value).__name__} is not a CloudEvents type (string, boolean or integer)",
    )


def check_attributes(attributes: Mapping[str, object]) -> dict[str, AttributeValue | None]:
    """Check each given attribute's name and value; ``None`` (absent) is kept as ``None``.

    The required attributes are not looked for: this serves partial updates.
    """
    checked: dict[str, AttributeValue | None] = {}
    for name, value in attributes.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidEventError(
                str(name), "attribute-name", "names are 1-20 lower-case ASCII letters or digits"
            )
        if value is None:
            checked[name] = None
        elif name in CONTEXT_ATTRIBUTES:
            given = format_timestamp(value) if isinstance(value, datetime) else value
            checked[name] = _check_context(name, given)
        elif name == "data":
            raise InvalidEventError(name, "reserved", "is the event's data, not an attribute")
        else:
            checked[name] = _check_extension(name, value)
    return checked


def require_attributes(attributes: Mapping[str, object]) -> None:
    """Raise for the first required attribute that is missing."""
    for name in REQUIRED_ATTRIBUTES:
        if name not in attributes:
            raise InvalidEventError(name, "required", "is required")


def validate_attributes(attributes: Mapping[str, object]) -> dict[str, AttributeValue]:
    """Check every CloudEvents 1.0 rule over ``attributes`` and return them canonicalised.

    ``None`` values are dropped (the JSON format treats null as absent); a ``datetime`` given for
    ``time`` or an extension becomes its RFC 3339 string. Raises :class:`InvalidEventError`
    naming the first offending attribute.
    """
    checked = {k: v for k, v in check_attributes(attributes).items() if v is not None}
    require_attributes(checked)
    return checked
