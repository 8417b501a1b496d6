"""Great Expectations suites (``expectations/*.json``) applied at each hand-off between steps.

GX is imported lazily, once per process (it takes seconds and ~240 MB), with analytics and progress
bars off. A failed validation raises :class:`ValidationFailed` carrying a readable report.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pandas as pd

SUITES_DIR = Path(__file__).resolve().parent.parent / "expectations"
SUITES = ("event", "spans", "evidence", "metric_evidence", "topology_edges", "posteriors")
_lock = threading.Lock()
_state: dict[str, Any] = {}


class ValidationFailed(Exception):
    """A hand-off did not meet its expectation suite. ``report`` is GX's ``describe_dict()``."""

    def __init__(self, suite: str, report: dict[str, Any]):
        self.suite = suite
        self.report = report
        failed = [e for e in report.get("expectations", []) if not e.get("success")]
        lines = [f"data for step '{suite}' failed {len(failed)} expectation(s):"]
        for e in failed:
            kwargs = {k: v for k, v in e.get("kwargs", {}).items() if k != "batch_id"}
            res = e.get("result", {})
            sample = res.get("partial_unexpected_list") or res.get("observed_value")
            lines.append(f"  - {e.get('expectation_type')} {kwargs}: unexpected {sample!r}")
        super().__init__("\n".join(lines))


def _context() -> Any:
    with _lock:
        if "ctx" not in _state:
            os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig

            ctx = gx.get_context(mode="ephemeral")
            ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
            source = ctx.data_sources.add_pandas("baynet")
            _state.update(gx=gx, ctx=ctx, source=source, suites={}, batches={})
        return _state


def load_suite_json(name: str) -> dict[str, Any]:
    path = SUITES_DIR / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"no expectation suite {name!r} at {path}")
    return json.loads(path.read_text())


def _registered(state: dict[str, Any], name: str) -> tuple[Any, Any]:
    """Suite ``name`` and its batch definition, registered with the context on first use (under ``_lock``)."""
    if name not in state["suites"]:
        gx, spec = state["gx"], load_suite_json(name)
        suite = gx.ExpectationSuite(**spec)
        # GX logs an expectation it cannot build and leaves it out: a suite must not check less than it says
        wanted = [e.get("type") for e in spec.get("expectations", [])]
        loaded = [e.expectation_type for e in suite.expectations]
        if len(loaded) != len(wanted):
            lost = [t for t in wanted if t not in loaded]
            raise ValueError(f"expectation suite {name!r} ({SUITES_DIR / (name + '.json')}): "
                             f"{', '.join(map(str, lost)) or 'some expectations'} could not be loaded")
        state["suites"][name] = state["ctx"].suites.add(suite)
        asset = state["source"].add_dataframe_asset(name)
        state["batches"][name] = asset.add_batch_definition_whole_dataframe(name)
    return state["suites"][name], state["batches"][name]


def warm() -> None:
    """Start great-expectations and register every suite now: a long-running consumer calls it before its
    first receive, so the first event does not pay the start (about 1.5 s in a fresh process) and a broken
    suite stops the consumer at its start instead of failing that event's run."""
    state = _context()
    with _lock:
        for name in SUITES:
            _registered(state, name)


def validate(name: str, frame: pd.DataFrame) -> dict[str, Any]:
    """Validate ``frame`` against suite ``name``; return the report or raise :class:`ValidationFailed`.
    Checked first for success alone (GX's ``BOOLEAN_ONLY``: half the time of a summary, which lists the
    unexpected values; seven hand-offs per incident), and only a failing frame again for the summary its
    error names."""
    state = _context()
    with _lock:
        suite, batch_def = _registered(state, name)
        batch = batch_def.get_batch(batch_parameters={"dataframe": frame})
        result = batch.validate(suite, result_format="BOOLEAN_ONLY")
        if not result.success:
            result = batch.validate(suite)
    report = result.describe_dict()
    if not result.success:
        raise ValidationFailed(name, report)
    return report
