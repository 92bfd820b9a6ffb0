"""The CloudEvents sample vectors from ../shared/spec: Gherkin scenarios and YAML events."""

from __future__ import annotations

import base64
import json
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from agentfn.events import (
    CloudEvent,
    KafkaRecord,
    from_http,
    from_kafka,
    is_json_media_type,
    is_text_media_type,
    to_batch,
    to_binary,
    to_structured,
)

from tests.events._support import percent_encode

CONFORMANCE = Path("cloudevents") / "conformance"


# ------------------------------------------------------------------- a minimal Gherkin reader


@dataclass
class Step:
    text: str
    docstring: str | None = None
    table: list[list[str]] = field(default_factory=list)


@dataclass
class Scenario:
    name: str
    steps: list[Step] = field(default_factory=list)
    examples: list[list[str]] = field(default_factory=list)


_STEP = re.compile(r"(Given|When|Then|And|But)\s+(.*)")


def parse_feature(text: str) -> list[Scenario]:
    """Scenarios of a .feature file, each Scenario Outline expanded once per Examples row."""
    scenarios: list[Scenario] = []
    current: Scenario | None = None
    in_examples = False
    doc_lines: list[str] | None = None
    doc_indent = 0
    for line in text.splitlines():
        stripped = line.strip()
        if doc_lines is not None:
            if stripped == '"""':
                assert current is not None
                current.steps[-1].docstring = "\n".join(doc_lines)
                doc_lines = None
            else:
                doc_lines.append(line[doc_indent:] if line[:doc_indent].isspace() else stripped)
            continue
        if stripped.startswith("Scenario"):
            current = Scenario(stripped.split(":", 1)[1].strip())
            scenarios.append(current)
            in_examples = False
        elif current is None:
            continue
        elif stripped == '"""':
            doc_lines, doc_indent = [], len(line) - len(line.lstrip())
        elif stripped.startswith("Examples:"):
            in_examples = True
        elif stripped.startswith("|"):
            row = [cell.strip() for cell in stripped.strip("|").split("|")]
            (current.examples if in_examples else current.steps[-1].table).append(row)
        elif match := _STEP.fullmatch(stripped):
            current.steps.append(Step(match.group(2)))
    expanded: list[Scenario] = []
    for scenario in scenarios:
        if not scenario.examples:
            expanded.append(scenario)
            continue
        names, *rows = scenario.examples
        for row in rows:
            values = dict(zip(names, row, strict=True))

            def fill(text: str, values: dict[str, str] = values) -> str:
                for name, value in values.items():
                    text = text.replace(f"<{name}>", value)
                return text

            expanded.append(
                Scenario(
                    fill(scenario.name),
                    [
                        Step(
                            fill(s.text),
                            None if s.docstring is None else fill(s.docstring),
                            [[fill(c) for c in r] for r in s.table],
                        )
                        for s in scenario.steps
                    ],
                )
            )
    return expanded


def table_dict(step: Step) -> dict[str, str]:
    header, *rows = step.table
    assert header == ["key", "value"]
    return {row[0]: row[1] for row in rows}


def step(scenario: Scenario, prefix: str) -> Step:
    [found] = [s for s in scenario.steps if s.text.startswith(prefix)]
    return found


def http_request(raw: str) -> tuple[list[tuple[str, str]], bytes]:
    """Headers and body of an HTTP/1.1 request written out as text."""
    head, _, body = raw.partition("\n\n")
    request_line, *header_lines = head.splitlines()
    assert request_line.startswith("POST ")
    headers = [
        (name.strip(), value.strip())
        for name, value in (line.split(":", 1) for line in header_lines)
    ]
    return headers, body.encode("utf-8")


def check_expectations(scenario: Scenario, parsed: CloudEvent) -> None:
    expected_attributes = table_dict(step(scenario, "the attributes are"))
    assert dict(parsed.attributes) == expected_attributes, scenario.name
    expected_data = step(scenario, "the data is equal to the following JSON").docstring
    assert expected_data is not None
    assert parsed.data == json.loads(expected_data), scenario.name


def test_http_binding_scenarios(shared_spec: Path) -> None:
    scenarios = parse_feature(
        (shared_spec / CONFORMANCE / "http-protocol-binding.feature").read_text(encoding="utf-8")
    )
    assert [s.name for s in scenarios] == [
        "Binary content mode (application/json)",
        "Binary content mode (application/json; charset=utf-8)",
        "Structured content mode (application/cloudevents+json)",
        "Structured content mode (application/cloudevents+json; charset=utf-8)",
    ]
    for scenario in scenarios:
        request = step(scenario, "an HTTP request").docstring
        assert request is not None
        headers, body = http_request(request)
        [parsed] = from_http(headers, body)
        check_expectations(scenario, parsed)


def test_kafka_binding_scenarios(shared_spec: Path) -> None:
    scenarios = parse_feature(
        (shared_spec / CONFORMANCE / "kafka-protocol-binding.feature").read_text(encoding="utf-8")
    )
    assert [s.name for s in scenarios] == [
        "Binary content mode",
        "Structured content mode (application/cloudevents+json)",
        "Structured content mode (application/cloudevents+json; charset=utf-8)",
    ]
    for scenario in scenarios:
        payload = step(scenario, "a Kafka message with payload").docstring
        assert payload is not None
        headers = table_dict(step(scenario, "Kafka headers"))
        record = KafkaRecord(
            value=payload.encode("utf-8"),
            headers=tuple((name, value.encode("utf-8")) for name, value in headers.items()),
        )
        check_expectations(scenario, from_kafka(record))


def test_feature_reader_expands_outlines_and_keeps_docstring_layout() -> None:
    text = textwrap.dedent('''\
        Feature: f
            Scenario Outline: s (<x>)
            Given a doc
                """
                {
                    "v": "<x>"
                }
                """
            Then the attributes are:
                | key | value |
                |   a | <x>   |
            Examples:
            | x |
            | 1 |
            | 2 |
        ''')
    first, second = parse_feature(text)
    assert first.name == "s (1)"
    assert first.steps[0].docstring == '{\n    "v": "1"\n}'
    assert table_dict(second.steps[1]) == {"a": "2"}


# ------------------------------------------------------------------------- the YAML vectors


def load_vectors(path: Path) -> list[dict[str, Any]]:
    # BaseLoader keeps every scalar a string: "1.0" and the timestamps stay as written.
    return [doc for doc in yaml.load_all(path.read_text(encoding="utf-8"), yaml.BaseLoader) if doc]


def vector_attributes(vector: dict[str, Any]) -> dict[str, str]:
    context = dict(vector["ContextAttributes"])
    extensions = context.pop("Extensions", {})
    return {**context, **extensions}


def expected_data(raw: str, content_type: str | None, mode: str) -> Any:
    """The canonical data (see agentfn.events._event) of the vector's ``Data`` in ``mode``."""
    if is_json_media_type(content_type) or (content_type is None and mode == "structured"):
        return json.loads(raw)
    if is_text_media_type(content_type):
        return raw
    return raw.encode("utf-8")


def binary_request(vector: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    attributes = vector_attributes(vector)
    headers = {
        f"ce-{name}": percent_encode(value)
        for name, value in attributes.items()
        if name != "datacontenttype"
    }
    if "datacontenttype" in attributes:
        headers["content-type"] = attributes["datacontenttype"]
    headers.update(vector.get("TransportExtensions", {}))
    return headers, vector["Data"].encode("utf-8")


def structured_document(vector: dict[str, Any]) -> dict[str, Any]:
    attributes = vector_attributes(vector)
    content_type = attributes.get("datacontenttype")
    document: dict[str, Any] = dict(attributes)
    data = expected_data(vector["Data"], content_type, "structured")
    if isinstance(data, bytes):
        document["data_base64"] = base64.b64encode(data).decode("ascii")
    else:
        document["data"] = data
    return document


def cloudevents_validator(shared_spec: Path) -> jsonschema.protocols.Validator:
    schema = json.loads((shared_spec / "cloudevents" / "cloudevents.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


@pytest.mark.parametrize("filename", ["v1.yaml", "v1_minimum.yaml"])
def test_yaml_vectors_parse_in_their_modes(shared_spec: Path, filename: str) -> None:
    vectors = load_vectors(shared_spec / CONFORMANCE / filename)
    assert len(vectors) == {"v1.yaml": 2, "v1_minimum.yaml": 6}[filename]
    validator = cloudevents_validator(shared_spec)
    for vector in vectors:
        attributes = vector_attributes(vector)
        content_type = attributes.get("datacontenttype")
        modes = [vector["Mode"]] if "Mode" in vector else ["binary", "structured"]
        for mode in modes:
            if mode == "binary":
                headers, body = binary_request(vector)
            else:
                document = structured_document(vector)
                validator.validate(document)
                headers = {"content-type": "application/cloudevents+json"}
                body = json.dumps(document, ensure_ascii=False).encode("utf-8")
            [parsed] = from_http(headers, body)
            label = f"{filename} {attributes['id']} {mode}"
            assert dict(parsed.attributes) == attributes, label
            assert parsed.data == expected_data(vector["Data"], content_type, mode), label
            # what this package writes for it is valid against the schema too
            written = json.loads(to_structured(parsed)[1])
            validator.validate(written)
            assert from_http(*to_batch([parsed])) == [parsed], label


def test_v1_vector_extension_with_newline_survives_binary_mode(shared_spec: Path) -> None:
    [binary_vector, _] = load_vectors(shared_spec / CONFORMANCE / "v1.yaml")
    headers, body = binary_request(binary_vector)
    assert headers["ce-comexampleextension2"] == "{%22othervalue%22:%205}%0A"
    [parsed] = from_http(headers, body)
    assert to_binary(parsed)[0]["ce-comexampleextension2"] == "{%22othervalue%22:%205}%0A"
    assert parsed.attributes["comexampleextension2"] == '{"othervalue": 5}\n'
    assert "user-agent" not in parsed.attributes


def test_cloudevents_schema_rejects_what_the_package_rejects(shared_spec: Path) -> None:
    validator = cloudevents_validator(shared_spec)
    base = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}
    validator.validate(base)
    for broken in (
        {k: v for k, v in base.items() if k != "id"},
        {**base, "type": ""},
        {**base, "subject": ""},
    ):
        assert not validator.is_valid(broken)
