"""Shaping a backend's result before it is reported: structured output, evidence for
outputs too large to keep inline."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from trinity_work.domain.model import Evidence, EvidenceKind, WorkResult

PREVIEW_CHARS = 1000


def structured(output: str) -> dict[str, object] | None:
    """The output parsed, when it is a JSON object."""
    text = output.strip()
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def finalize(result: WorkResult, work_id: str, inline_limit: int, evidence_dir: Path) -> WorkResult:
    """Add the structured output; move an output above ``inline_limit`` bytes to a file
    under ``evidence_dir`` and keep a reference (and a short preview) instead."""
    size = len(result.output.encode())
    if size <= inline_limit:
        if result.structured_output is None:
            parsed = structured(result.output)
            if parsed is not None:
                result = dataclasses.replace(result, structured_output=parsed)
        return result
    folder = evidence_dir / work_id
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "output.txt"
    path.write_text(result.output)
    reference = Evidence(EvidenceKind.OUTPUT, name="output", uri=path.resolve().as_uri())
    preview = result.output[:PREVIEW_CHARS]
    return dataclasses.replace(
        result,
        output=f"{preview}\n…[output of {size} bytes stored as evidence: {reference.uri}]",
        structured_output=None,
        evidence=(*result.evidence, reference),
    )
