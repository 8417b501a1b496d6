"""`baynet eval compare`: two evaluation runs case by case, and the loss that fails a rule change."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from baynet.lab.compare import CompareError, compare_runs
from baynet.lab.scoring import summarise_bundles


def _run(ranked: dict[tuple[str, str], tuple[str, list[str]]]) -> dict:
    """An `eval bundles --json` run, built by the scorer itself: case -> (fault type, Baynet's ranking);
    the truth is always service "a"."""
    rows = [{"case": case, "directory": d, "fault_type": fault, "truth": "a", "rankings": {"baynet": ranking},
             "sources": ["metrics"], "notes": [], "candidates": 4, "seconds": 0.1}
            for (d, case), (fault, ranking) in ranked.items()]
    return json.loads(json.dumps(summarise_bundles(rows, [])))


BEFORE = {("m1", "c1"): ("cpu", ["a", "b", "c", "d"]), ("m1", "c2"): ("cpu", ["b", "a", "c", "d"]),
          ("m2", "c1"): ("delay", ["a", "b", "c", "d"]), ("m2", "c3"): ("delay", ["c", "b", "a", "d"])}


def test_a_change_that_helps_one_mesh_and_costs_another_is_reported_as_a_loss() -> None:
    after = dict(BEFORE)
    after[("m1", "c2")] = ("cpu", ["a", "b", "c", "d"])        # m1 gains a case
    after[("m2", "c1")] = ("delay", ["b", "c", "d", "a"])      # m2 loses one: same overall AC@1
    out = compare_runs(_run(BEFORE), _run(after))
    assert out["overall"]["before"]["AC@1"] == out["overall"]["after"]["AC@1"] == 0.5
    assert out["by_directory"]["m1"]["after"]["AC@1"] == 1.0 and not out["by_directory"]["m1"]["lost"]
    assert out["by_directory"]["m2"]["lost"] and out["by_type"]["m2 | delay"]["lost"]
    assert out["lost"] == ["directory m2", "m2 | delay"]
    assert [(m["directory"], m["case"], m["rank_before"], m["rank_after"]) for m in out["moved"]] == \
        [("m1", "c2", 2, 1), ("m2", "c1", 1, 4)]
    assert out["by_type"]["m2 | delay"]["after"]["Avg@5"] == pytest.approx((0.4 + 0.6) / 2)  # ranks 4 and 3


def test_only_the_shared_cases_are_scored_and_the_rest_are_listed() -> None:
    after = {k: v for k, v in BEFORE.items() if k != ("m2", "c3")}
    after[("m2", "c9")] = ("delay", ["a", "b", "c", "d"])
    out = compare_runs(_run(BEFORE), _run(after))
    assert out["overall"]["before"]["n"] == 3 and out["moved"] == [] and out["lost"] == []
    assert out["only_before"] == ["c3"] and out["only_after"] == ["c9"]


def test_what_is_not_a_run_is_refused_by_name() -> None:
    with pytest.raises(CompareError, match="before: not the JSON"):
        compare_runs({"overall": {}}, _run(BEFORE))
    with pytest.raises(CompareError, match="share no case"):
        compare_runs(_run({("x", "z"): ("cpu", ["a"])}), _run(BEFORE))


def test_the_command_exits_1_on_a_loss_with_fail_on_loss_and_2_on_a_bad_file(tmp_path) -> None:
    from baynet.cli.main import app

    after = dict(BEFORE)
    after[("m2", "c1")] = ("delay", ["b", "a", "c", "d"])
    (tmp_path / "a.json").write_text(json.dumps(_run(BEFORE)))
    (tmp_path / "b.json").write_text(json.dumps(_run(after)))
    runner = CliRunner()
    shown = runner.invoke(app, ["eval", "compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert shown.exit_code == 0, shown.output
    assert "m2/c1 (delay, truth a): rank 1 -> 2; top 1 a -> b" in shown.output
    failed = runner.invoke(app, ["eval", "compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                                 "--fail-on-loss", "--json"])
    assert failed.exit_code == 1 and json.loads(failed.output)["lost"] == ["directory m2", "m2 | delay", "overall"]
    same = runner.invoke(app, ["eval", "compare", str(tmp_path / "a.json"), str(tmp_path / "a.json"), "--fail-on-loss"])
    assert same.exit_code == 0 and "0 case(s) moved" in same.output
    (tmp_path / "bad.json").write_text("{not json")
    bad = runner.invoke(app, ["eval", "compare", str(tmp_path / "bad.json"), str(tmp_path / "a.json")])
    assert bad.exit_code == 2 and "bad.json: not JSON" in bad.output
