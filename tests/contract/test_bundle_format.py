"""The incident bundle (format 1) as a contract: hand-written bundles, good and hostile, through
`baynet bundle check` -- a bad bundle exits 2 naming the file, line and value, with no traceback, and
nothing is written."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from baynet.cli.main import app
from baynet.otlp import Span, render_resource_spans

RUNNER = CliRunner()
EVENT = {"id": "inc-1", "service": "front-end", "event_type": "latency", "timestamp": 1700000000,
         "severity": "critical"}
SIGNALS = """time,source,destination,window_s,requests,error_ratio,latency_ms_avg,latency_ms_p50,latency_ms_p90,latency_ms_p99,destination_version,reporter,extra
1699999940,front-end,orders_AWS::DynamoDB::Table,60,120,0.0,12.5,10,20,40,v1,source,ignored
1699999940,front-end,orders_AWS::DynamoDB::Table,60,118,,,,,,v1,destination,
1699999940,,front-end,60,300,0.01,80,70,120,200,,,
1700000000,front-end,orders_AWS::DynamoDB::Table,60,121,0.25,300,250,500,900,v2,source,
1700000000,,front-end,30.5,290,0.2,400,300,700,1200,,destination,
"""
RESOURCES = """time,service,metric,value
1699999940,db@host_remote,cpu,0.5
1699999940,db@host_remote,cpu,0.7
1700000000,db@host_remote,cpu,0.9
1700000000,db@host_remote,memory,
"""


def _trace_body() -> dict:
    t, base = "a" * 32, 1_699_999_990 * 10**9
    spans = [Span(t, "1" * 16, "", "front-end", "GET /", "server", base, base + 50_000_000, "unset"),
             Span(t, "2" * 16, "1" * 16, "orders", "query", "server", base + 10_000_000, base + 40_000_000, "error")]
    return {"batches": render_resource_spans(spans)}


def write_bundle(root: Path, **files: str | dict | None) -> Path:
    """A complete valid bundle, with ``files`` replacing (text/dict) or removing (None) some of it."""
    content: dict[str, str | dict | None] = {
        "bundle.json": {"format": 1}, "event.json": EVENT, "traces/t1.json": _trace_body(),
        "signals.csv": SIGNALS, "resources.csv": RESOURCES,
        "topology.csv": "source,destination\nfront-end,orders_AWS::DynamoDB::Table\n",
        "changes.csv": "time,service,kind,detail\n1699999900,orders,deploy,v2\n1699999950,front-end,config,\n",
        "truth.json": {"root_cause": "orders_AWS::DynamoDB::Table", "fault_type": "deploy"},
        "notes.txt": "unknown files are ignored",
    }
    content.update({k.replace("__", "/").replace("_dot_", "."): v for k, v in files.items()})
    root.mkdir(parents=True, exist_ok=True)
    for name, value in content.items():
        if value is None:
            continue
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value if isinstance(value, str) else json.dumps(value))
    return root


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_a_full_bundle_is_valid_and_summarised(tmp_path):
    bundle = write_bundle(tmp_path / "b")
    result = RUNNER.invoke(app, ["bundle", "check", str(bundle), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["event"]["service"] == "front-end" and summary["has_truth"]
    assert summary["trace_files"] == 1 and summary["traces"] == 1 and summary["spans"] == 2
    assert summary["rows"] == {"signals.csv": 5, "resources.csv": 4, "topology.csv": 1, "changes.csv": 2}
    # free-text service names survive as they are
    assert {"orders_AWS::DynamoDB::Table", "db@host_remote"} <= set(summary["services"])
    assert summary["time_range"][0] <= 1699999900 and summary["time_range"][1] == 1700000000


def test_only_the_event_is_required(tmp_path):
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "event.json").write_text(json.dumps(EVENT))
    result = RUNNER.invoke(app, ["bundle", "check", str(bundle)])
    assert result.exit_code == 0 and "valid" in result.output and "truth      absent" in result.output


HOSTILE = {
    "no event": ({"event_dot_json": None}, "event.json: is missing"),
    "event not JSON": ({"event_dot_json": "{oops"}, "event.json"),
    "event without a service": ({"event_dot_json": {**EVENT, "service": ""}}, "event.json"),
    "event a list": ({"event_dot_json": [EVENT, {**EVENT, "id": "inc-2"}]}, "event.json: message must be a JSON object"),
    "future format": ({"bundle_dot_json": {"format": 2}}, "format 2 is not supported"),
    "bundle.json not an object": ({"bundle_dot_json": [1]}, "bundle.json: must be a JSON object"),
    "trace not JSON": ({"traces__t1_dot_json": "{\"batches\": ["}, "traces/t1.json: is not valid JSON"),
    "trace not a trace body": ({"traces__t1_dot_json": {"spans": []}}, "traces/t1.json: is not a Tempo/OTLP"),
    "signals without destination column": ({"signals_dot_csv": "time,source\n1,a\n"}, "lacks the column(s) destination"),
    "signals time not a number": ({"signals_dot_csv": "time,destination\nyesterday,a\n"}, "line 2, column 'time'"),
    "signals time blank": ({"signals_dot_csv": "time,destination\n,a\n"}, "column 'time': must not be blank"),
    "signals destination blank": ({"signals_dot_csv": "time,destination\n1,\n"}, "column 'destination'"),
    "error ratio above 1": ({"signals_dot_csv": "time,destination,error_ratio\n1,a,1.5\n"}, "between 0 and 1"),
    "negative requests": ({"signals_dot_csv": "time,destination,requests\n1,a,-3\n"}, "column 'requests'"),
    "infinite latency": ({"signals_dot_csv": "time,destination,latency_ms_p99\n1,a,inf\n"}, "finite"),
    "zero window": ({"signals_dot_csv": "time,destination,window_s\n1,a,0\n"}, "column 'window_s'"),
    "unknown reporter": ({"signals_dot_csv": "time,destination,reporter\n1,a,proxy\n"}, "column 'reporter'"),
    "signals back in time": ({"signals_dot_csv": "time,destination\n5,a\n4,a\n"}, "goes back"),
    "signals time repeated in a series": ({"signals_dot_csv": "time,destination\n5,a\n5,a\n"}, "repeats"),
    "ragged row": ({"signals_dot_csv": "time,destination\n1,a,extra\n"}, "line 2"),
    "repeated header column": ({"signals_dot_csv": "time,destination,time\n1,a,2\n"}, "repeats the column"),
    "empty csv": ({"resources_dot_csv": ""}, "resources.csv: is empty"),
    "resources value not a number": ({"resources_dot_csv": "time,service,metric,value\n1,a,cpu,high\n"},
                                     "column 'value'"),
    "resources metric blank": ({"resources_dot_csv": "time,service,metric,value\n1,a,,1\n"}, "column 'metric'"),
    "resources back in time": ({"resources_dot_csv": "time,service,metric,value\n2,a,cpu,1\n1,a,cpu,1\n"},
                               "goes back"),
    "not UTF-8": ({"topology_dot_csv": "source,destination\n\udcff,a\n"}, "topology.csv"),
    "topology source blank": ({"topology_dot_csv": "source,destination\n,a\n"}, "column 'source'"),
    "changes kind blank": ({"changes_dot_csv": "time,service,kind,detail\n1,a,,v2\n"}, "column 'kind'"),
    "changes without detail column": ({"changes_dot_csv": "time,service,kind\n1,a,deploy\n"}, "detail"),
    "truth without root cause": ({"truth_dot_json": {"fault_type": "x"}}, "needs a non-blank string root_cause"),
    "truth not JSON": ({"truth_dot_json": "root_cause=orders"}, "truth.json: is not valid JSON"),
    "bad quoting": ({"signals_dot_csv": 'time,destination\n1,"a\n'}, "signals.csv"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_bundle_exits_2_naming_the_problem_and_writes_nothing(tmp_path, case):
    files, expected = HOSTILE[case]
    if case == "not UTF-8":
        bundle = write_bundle(tmp_path / "b")
        (bundle / "topology.csv").write_bytes(b"source,destination\n\xff\xfe,a\n")
    else:
        bundle = write_bundle(tmp_path / "b", **files)
    before = _snapshot(bundle)
    result = RUNNER.invoke(app, ["bundle", "check", str(bundle)])
    assert result.exit_code == 2, (case, result.output)
    assert expected in result.output, (case, result.output)
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)  # a clean exit, not an exception escaping
    assert _snapshot(bundle) == before


def test_not_a_directory(tmp_path):
    result = RUNNER.invoke(app, ["bundle", "check", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "is not a directory" in result.output
