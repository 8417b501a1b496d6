"""Locating Nezha faults where their spans are: time-zone slips, several span files, faults without spans."""

import json
from datetime import UTC, datetime

import pandas as pd
import pytest

from baynet.lab.datasets.nezha import list_cases

COLUMNS = ["TraceID", "SpanID", "ParentID", "PodName", "OperationName", "StartTimeUnixNano", "EndTimeUnixNano",
           "Duration"]


def _unix(clock: str) -> int:
    return int(datetime.strptime(f"2023-01-29 {clock}", "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp())


def _span_file(path, first: int, seconds: int = 60) -> None:
    rows = [[f"t{i}", f"s{i}", "root", "gateway-6f6cfc45b-h5m2n", "GET /", (first + i) * 10**9,
             (first + i) * 10**9 + 10**6, 1000] for i in range(0, seconds, 5)]
    pd.DataFrame(rows, columns=COLUMNS).to_csv(path, index=False)


@pytest.fixture
def day(tmp_path):
    d = tmp_path / "2023-01-29"
    (d / "trace").mkdir(parents=True)
    # The spans follow inject_time (read as UTC); inject_timestamp is 8 h earlier (a time-zone slip).
    for name, start in (("08_43", "08:42:09"), ("08_44", "08:43:10"), ("08_45", "08:44:08"),
                        ("13_32", "13:31:05"), ("13_33", "13:32:05")):
        _span_file(d / "trace" / f"{name}_trace.csv", _unix(start))
    faults = {"08": [
        {"inject_time": "2023-01-29 08:43:04", "inject_timestamp": str(_unix("08:43:04") - 8 * 3600),
         "inject_pod": "ts-contacts-service-866bd68c97-xcqfx", "inject_type": "return"}],
        "13": [
        # both times agree: not re-located
        {"inject_time": "2023-01-29 13:31:54", "inject_timestamp": str(_unix("13:31:54")),
         "inject_pod": "ts-food-service-f5756978c-k8vqf", "inject_type": "cpu_contention"},
        # no spans anywhere near either time
        {"inject_time": "2023-01-29 17:00:00", "inject_timestamp": str(_unix("17:00:00")),
         "inject_pod": "ts-food-service-f5756978c-k8vqf", "inject_type": "exception"}]}
    (d / "fault_list.json").write_text(json.dumps(faults))
    return tmp_path


def test_a_time_zone_slip_is_relocated_to_the_time_the_spans_follow(day):
    slipped = next(c for c in list_cases(day) if c.fault_type == "return")
    assert slipped.inject_ts == _unix("08:43:04")
    assert "inject_time" in slipped.relocated and "+7.9" in slipped.relocated or "+8.0" in slipped.relocated
    # every span file covering the analysed window (a minute before to two after), not only one
    assert [p.name for p in slipped.trace_files] == ["08_43_trace.csv", "08_44_trace.csv", "08_45_trace.csv"]
    assert slipped.truth == "ts-contacts-service"


def test_agreeing_times_stay_and_a_fault_without_spans_has_no_files(day):
    cases = {c.fault_type: c for c in list_cases(day)}
    assert cases["cpu_contention"].relocated is None
    assert cases["cpu_contention"].inject_ts == _unix("13:31:54")
    assert [p.name for p in cases["cpu_contention"].trace_files] == ["13_32_trace.csv", "13_33_trace.csv"]
    assert cases["exception"].trace_files == [] and cases["exception"].relocated is None


def test_a_fault_list_entry_without_its_fields_is_named(tmp_path):
    d = tmp_path / "2023-01-29"
    (d / "trace").mkdir(parents=True)
    (d / "fault_list.json").write_text(json.dumps({"08": [{"inject_time": "2023-01-29 08:43:04"}]}))
    with pytest.raises(ValueError, match="inject_timestamp"):
        list_cases(tmp_path)
