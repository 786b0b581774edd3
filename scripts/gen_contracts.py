"""Generate Python messages, gRPC stubs and type stubs from proto/ into libs/contracts.

buf has no built-in grpc_python plugin, so this calls grpc_tools.protoc directly
(buf still formats, lints and checks breaking changes). Output import paths equal
the proto packages: `trinity.process.work.v1.work_pb2`.

    python scripts/gen_contracts.py           # regenerate
    python scripts/gen_contracts.py --check   # fail if the committed code drifted
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "libs" / "contracts"
WELL_KNOWN = Path(grpc_tools.__file__).parent / "_proto"


def generate(out: Path) -> None:
    sources = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{WELL_KNOWN}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out=quiet:{out}",  # quiet: no "Writing mypy to …" line per file
        f"--mypy_grpc_out=quiet:{out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    # Only *_service.proto files define services; drop the empty grpc modules of the rest.
    for stub in out.rglob("*_pb2_grpc.py*"):
        if "_service_pb2_grpc" not in stub.name:
            stub.unlink()


def tree(root: Path) -> set[str]:
    """Every generated file below root, as paths relative to it."""
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def check() -> int:
    committed = OUT_DIR
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        expected, actual = tree(fresh), tree(committed)
        drift = sorted(expected ^ actual)
        drift += [
            p
            for p in sorted(expected & actual)
            if not filecmp.cmp(fresh / p, committed / p, shallow=False)
        ]
    if drift:
        print("generated code drifted from proto/ (run `make gen`):", *drift, sep="\n  ")
        return 1
    print("generated code is up to date")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="only compare, write nothing")
    if parser.parse_args().check:
        return check()
    shutil.rmtree(OUT_DIR / "trinity", ignore_errors=True)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    generate(OUT_DIR)
    print(f"generated into {OUT_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
