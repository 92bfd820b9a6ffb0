"""EventCatalog: payload models bound to event types, parsing, minting and schema export."""

from __future__ import annotations

from datetime import UTC, datetime

import jsonschema
import pytest
from agentfn.events import CloudEvent, EventCatalog, UnknownEventTypeError, from_http, to_structured
from pydantic import BaseModel, ValidationError

from tests.events._support import attrs


class Address(BaseModel):
    street: str
    zip: str


class OrderPlaced(BaseModel):
    order_id: str
    amount: int
    at: datetime
    ship_to: Address


class OrderCancelled(BaseModel):
    order_id: str
    reason: str = "unspecified"


ORDER = OrderPlaced(
    order_id="o-1",
    amount=3,
    at=datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
    ship_to=Address(street="Main 1", zip="12345"),
)


@pytest.fixture
def catalog() -> EventCatalog:
    built = EventCatalog()
    built.register("com.example.order.placed", OrderPlaced)

    @built.event("com.example.order.cancelled")
    class _Cancelled(OrderCancelled):
        pass

    built.register("com.example.order.cancelled.v0", OrderCancelled)
    return built


def test_register_and_decorator_bind_types(catalog: EventCatalog) -> None:
    assert catalog.model_for("com.example.order.placed") is OrderPlaced
    assert catalog.model_for("com.example.order.cancelled").__name__ == "_Cancelled"
    assert "com.example.order.placed" in catalog
    assert "com.example.unknown" not in catalog
    assert list(catalog) == [
        "com.example.order.placed",
        "com.example.order.cancelled",
        "com.example.order.cancelled.v0",
    ]
    assert catalog.type_of(OrderPlaced) == "com.example.order.placed"


def test_decorator_returns_the_model_unchanged() -> None:
    catalog = EventCatalog()
    decorated = catalog.event("t")(OrderCancelled)
    assert decorated is OrderCancelled


def test_rebinding_the_same_model_is_allowed(catalog: EventCatalog) -> None:
    catalog.register("com.example.order.placed", OrderPlaced)
    assert catalog.model_for("com.example.order.placed") is OrderPlaced


def test_rebinding_a_type_to_another_model_is_an_error(catalog: EventCatalog) -> None:
    with pytest.raises(ValueError, match="already bound to OrderPlaced"):
        catalog.register("com.example.order.placed", OrderCancelled)
    assert catalog.model_for("com.example.order.placed") is OrderPlaced


def test_unknown_types_and_models_raise_unknown_event_type(catalog: EventCatalog) -> None:
    with pytest.raises(UnknownEventTypeError):
        catalog.model_for("com.example.unknown")
    with pytest.raises(UnknownEventTypeError):
        catalog.type_of(Address)
    assert issubclass(UnknownEventTypeError, KeyError)


def test_catalogs_do_not_share_types(catalog: EventCatalog) -> None:
    other = EventCatalog()
    assert "com.example.order.placed" not in other
    assert list(other) == []


def test_parse_validates_json_value_bytes_and_text_data(catalog: EventCatalog) -> None:
    payload = ORDER.model_dump(mode="json")
    as_json = CloudEvent(attrs(type="com.example.order.placed"), payload)
    as_bytes = CloudEvent(attrs(type="com.example.order.placed"), ORDER.model_dump_json().encode())
    as_text = CloudEvent(attrs(type="com.example.order.placed"), ORDER.model_dump_json())
    for carried in (as_json, as_bytes, as_text):
        assert catalog.parse(carried) == ORDER


def test_parse_raises_pydantic_validation_error_for_bad_data(catalog: EventCatalog) -> None:
    bad = CloudEvent(attrs(type="com.example.order.placed"), {"order_id": "o-1", "amount": "x"})
    with pytest.raises(ValidationError) as caught:
        catalog.parse(bad)
    failed = {error["loc"][0] for error in caught.value.errors()}
    assert failed == {"amount", "at", "ship_to"}


def test_parse_of_unknown_type_raises_unknown_event_type(catalog: EventCatalog) -> None:
    with pytest.raises(UnknownEventTypeError):
        catalog.parse(CloudEvent(attrs(type="com.example.unknown"), {}))


def test_to_event_mints_a_json_event_of_the_registered_type(catalog: EventCatalog) -> None:
    minted = catalog.to_event(ORDER, source="/shop", subject="o-1")
    assert minted.type == "com.example.order.placed"
    assert minted.source == "/shop"
    assert minted.datacontenttype == "application/json"
    assert minted.attributes["subject"] == "o-1"
    assert minted.data == {
        "order_id": "o-1",
        "amount": 3,
        "at": "2024-05-06T07:08:09Z",
        "ship_to": {"street": "Main 1", "zip": "12345"},
    }
    [received] = from_http(*to_structured(minted))
    assert catalog.parse(received) == ORDER


def test_to_event_of_unregistered_model_raises(catalog: EventCatalog) -> None:
    with pytest.raises(UnknownEventTypeError):
        catalog.to_event(Address(street="s", zip="z"), source="/s")


def test_json_schema_is_a_valid_draft_2020_12_document(catalog: EventCatalog) -> None:
    document = catalog.json_schema()
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(document)
    defs = document["$defs"]
    assert {"com.example.order.placed", "com.example.order.cancelled", "Address"} <= set(defs)
    assert defs["com.example.order.placed"]["x-cloudevents-type"] == "com.example.order.placed"
    assert "$defs" not in defs["com.example.order.placed"]


@pytest.mark.parametrize(
    ("event_type", "payload", "valid"),
    [
        ("com.example.order.placed", ORDER.model_dump(mode="json"), True),
        ("com.example.order.placed", {**ORDER.model_dump(mode="json"), "amount": "3"}, False),
        ("com.example.order.placed", {**ORDER.model_dump(mode="json"), "ship_to": {}}, False),
        ("com.example.order.cancelled", {"order_id": "o-1"}, True),
        ("com.example.order.cancelled", {"reason": "r"}, False),
    ],
)
def test_exported_schema_validates_payloads_through_refs(
    catalog: EventCatalog, event_type: str, payload: dict[str, object], valid: bool
) -> None:
    document = catalog.json_schema()
    schema = {**document, "$ref": f"#/$defs/{event_type}"}
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid(payload) is valid


def test_to_event_keeps_a_given_datacontenttype() -> None:
    catalog = EventCatalog()

    @catalog.event("com.example.note")
    class Note(BaseModel):
        text: str

    made = catalog.to_event(Note(text="hi"), source="/t", datacontenttype="application/vnd.x+json")
    assert made.datacontenttype == "application/vnd.x+json"
    assert made.data == {"text": "hi"}


def test_json_schema_refuses_two_different_nested_models_with_one_name() -> None:
    def make(field: str) -> type[BaseModel]:
        inner = type("Inner", (BaseModel,), {"__annotations__": {field: int}})
        return type("Outer", (BaseModel,), {"__annotations__": {"inner": inner}})

    catalog = EventCatalog()
    catalog.register("com.example.a", make("a"))
    catalog.register("com.example.b", make("b"))
    with pytest.raises(ValueError, match="'Inner'"):
        catalog.json_schema()
