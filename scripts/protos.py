"""Regenerate the gRPC stubs of ``events/proto/*.proto`` (``python scripts/protos.py``).

The stubs are committed, so using agentfn needs no protoc; ``tests/events/test_protos.py``
regenerates them into a temporary folder and fails when the committed ones differ.

The protos are compiled as ``agentfn/events/proto/<name>.proto`` (staged in a temporary tree
with that layout), so the generated modules import each other as ``agentfn.events.proto``: the
name the package installs under, not the folder it lives in here.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "events" / "proto"
PACKAGE = Path("agentfn") / "events" / "proto"


def generate(out: Path) -> list[Path]:
    """Compile every ``events/proto/*.proto`` into ``out``; the files written."""
    protos = sorted(SOURCE.glob("*.proto"))
    with tempfile.TemporaryDirectory(prefix="agentfn-protos-") as scratch:
        staged, built = Path(scratch) / "src", Path(scratch) / "out"
        (staged / PACKAGE).mkdir(parents=True)
        built.mkdir()
        for proto in protos:
            shutil.copy(proto, staged / PACKAGE / proto.name)
        include = Path(protoc.__file__).parent / "_proto"  # google/protobuf/*.proto
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{staged}",
                f"-I{include}",
                f"--python_out={built}",
                f"--pyi_out={built}",
                f"--grpc_python_out={built}",
                *(str(PACKAGE / proto.name) for proto in protos),
            ]
        )
        if code != 0:
            raise SystemExit(f"protoc failed ({code})")
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for generated in sorted((built / PACKAGE).iterdir()):
            target = out / generated.name
            shutil.copy(generated, target)
            written.append(target)
        return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SOURCE, help="where to write the stubs")
    args = parser.parse_args()
    for path in generate(args.out):
        print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


if __name__ == "__main__":
    sys.exit(main())
