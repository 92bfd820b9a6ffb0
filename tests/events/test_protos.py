"""The committed gRPC stubs are what ``scripts/protos.py`` generates from the committed
``.proto`` files, and ``cloudevents.proto`` is the CloudEvents Protobuf format's own schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "events" / "proto"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def _generated(folder: Path) -> dict[str, bytes]:
    return {
        path.name: path.read_bytes()
        for path in sorted(folder.iterdir())
        if path.name.endswith(GENERATED_SUFFIXES)
    }


def test_committed_stubs_equal_a_fresh_generation(tmp_path: Path) -> None:
    out = tmp_path / "stubs"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "protos.py"), "--out", str(out)],
        check=True,
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
    )
    fresh, committed = _generated(out), _generated(PROTO_DIR)
    assert fresh, "scripts/protos.py wrote no stubs"
    assert sorted(fresh) == sorted(committed), "stub files differ: run scripts/protos.py"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale stubs {stale}: run `python scripts/protos.py` and commit them"


# ------------------------------------------------------------- the upstream schema, field by field


def _descriptor(proto: Path, tmp_path: Path) -> descriptor_pb2.FileDescriptorProto:
    """``proto`` compiled by protoc (the same compiler the stubs come from)."""
    out = tmp_path / f"{proto.parent.name}-{proto.stem}.pb"
    include = Path(protoc.__file__).parent / "_proto"
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto.parent}",
            f"-I{include}",
            f"--descriptor_set_out={out}",
            str(proto),
        ]
    )
    assert code == 0, f"protoc could not compile {proto}"
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    [compiled] = files
    return compiled


def _shape(message: descriptor_pb2.DescriptorProto) -> dict[str, Any]:
    """What decides the wire form and the generated API of ``message``: every field's name,
    number, label, type and type name, its oneof, map entries, and the nested messages."""
    oneofs = [oneof.name for oneof in message.oneof_decl]
    return {
        "fields": {
            field.name: {
                "number": field.number,
                "label": field.label,
                "type": field.type,
                "type_name": field.type_name,
                "oneof": oneofs[field.oneof_index] if field.HasField("oneof_index") else None,
                "proto3_optional": field.proto3_optional,
            }
            for field in message.field
        },
        "oneofs": oneofs,
        "map_entry": message.options.map_entry,
        "nested": {nested.name: _shape(nested) for nested in message.nested_type},
        "enums": [enum.name for enum in message.enum_type],
    }


def _schema(compiled: descriptor_pb2.FileDescriptorProto) -> dict[str, Any]:
    return {
        "package": compiled.package,
        "syntax": compiled.syntax,
        "dependencies": sorted(compiled.dependency),
        "messages": {message.name: _shape(message) for message in compiled.message_type},
        "enums": [enum.name for enum in compiled.enum_type],
        "services": [service.name for service in compiled.service],
        "go_package": compiled.options.go_package,
        "java_package": compiled.options.java_package,
    }


@pytest.fixture
def upstream_proto(shared_spec: Path) -> Path:
    path = shared_spec / "cloudevents" / "cloudevents.proto"
    if not path.is_file():
        pytest.skip(f"the CloudEvents Protobuf schema is not at {path}")
    return path


def test_cloudevents_proto_matches_the_upstream_format(
    upstream_proto: Path, tmp_path: Path
) -> None:
    ours = _schema(_descriptor(PROTO_DIR / "cloudevents.proto", tmp_path))
    theirs = _schema(_descriptor(upstream_proto, tmp_path))
    assert ours == theirs
    event = ours["messages"]["CloudEvent"]
    # The comparison is over real content, not two empty shapes.
    assert event["fields"]["text_data"]["number"] == 7
    assert set(event["nested"]["CloudEventAttributeValue"]["fields"]) == {
        "ce_boolean",
        "ce_integer",
        "ce_string",
        "ce_bytes",
        "ce_uri",
        "ce_uri_ref",
        "ce_timestamp",
    }


@pytest.mark.parametrize(
    ("change", "replacement"),
    [
        ("string text_data = 7;", "string text_data = 9;"),
        ("int32 ce_integer = 2;", "int64 ce_integer = 2;"),
        ("bytes binary_data = 6;", "string binary_data = 6;"),
        ("string spec_version = 3;", "string specversion = 3;"),
    ],
)
def test_the_comparison_sees_a_changed_field(
    upstream_proto: Path, tmp_path: Path, change: str, replacement: str
) -> None:
    text = upstream_proto.read_text()
    assert change in text
    altered = tmp_path / "altered" / "cloudevents.proto"
    altered.parent.mkdir()
    altered.write_text(text.replace(change, replacement))
    assert _schema(_descriptor(altered, tmp_path)) != _schema(_descriptor(upstream_proto, tmp_path))


def test_committed_module_is_compiled_from_the_committed_proto(tmp_path: Path) -> None:
    from agentfn.events.proto import cloudevents_pb2

    loaded = descriptor_pb2.FileDescriptorProto()
    cloudevents_pb2.DESCRIPTOR.CopyToProto(loaded)
    compiled = _descriptor(PROTO_DIR / "cloudevents.proto", tmp_path)
    assert _schema(loaded) == _schema(compiled)
