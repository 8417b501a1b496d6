"""Validation at a hand-off, as the tasks run it: a failure also leaves a Prefect artifact with the report."""

from __future__ import annotations

import pandas as pd
from prefect.artifacts import create_markdown_artifact

from baynet.validation import ValidationFailed, validate


def validated(suite: str, frame: pd.DataFrame) -> None:
    """Validate ``frame`` against ``expectations/<suite>.json``; on failure publish the report, then raise
    (the tasks never retry a :class:`ValidationFailed`)."""
    try:
        validate(suite, frame)
    except ValidationFailed as exc:
        create_markdown_artifact(key=f"validation-{suite.replace('_', '-')}",
                                 markdown=f"### Validation failed: `{suite}`\n\n```\n{exc}\n```",
                                 description=f"data handed on by step '{suite}' failed its expectations")
        raise
