"""Evaluation summaries: success rates with binomial standard errors, by hand."""

from __future__ import annotations

import math

import pytest

from vlarl.evaluate import percent, standard_error, summarize


def _episodes(successes):
    return [{"init_state": i, "success": s, "length": 10 + i} for i, s in enumerate(successes)]


def test_summary_rates_and_standard_errors_by_hand():
    report = summarize({"a": _episodes([True, False, False, False]), "b": _episodes([True] * 5)})
    a, b = report["per_task"]["a"], report["per_task"]["b"]
    assert a["success_rate"] == 0.25 and a["trials"] == 4 and a["mean_length"] == 11.5
    assert a["stderr"] == pytest.approx(math.sqrt(0.25 * 0.75 / 4))
    assert b["success_rate"] == 1.0 and b["stderr"] == 0.0
    assert report["mean_success"] == pytest.approx(0.625)
    assert report["mean_stderr"] == pytest.approx(math.sqrt(0.25 * 0.75 / 4) / 2)  # (se_a^2 + se_b^2)^0.5 / K


def test_standard_error_of_no_trials_and_its_slow_reference():
    assert standard_error(0.0, 0) == 0.0
    outcomes = [1, 0, 1, 1, 0, 0, 0, 1, 1, 1]
    p = sum(outcomes) / len(outcomes)
    variance = sum((o - p) ** 2 for o in outcomes) / len(outcomes)  # population variance of the 0/1 outcomes
    assert standard_error(p, len(outcomes)) == pytest.approx(math.sqrt(variance / len(outcomes)))
    assert percent(0.456, 0.049) == "46% ± 5"


def test_suite_rows_for_tasks_named_suite_colon_index():
    from rich.console import Console

    from vlarl.evaluate import suite_table

    results = {
        "libero_goal:0": _episodes([True, True, False, False]),  # 0.5
        "libero_goal:1": _episodes([True] * 4),  # 1.0
        "libero_10:0": _episodes([False] * 4),  # 0.0
    }
    report = summarize(results)
    goal, long = report["per_suite"]["libero_goal"], report["per_suite"]["libero_10"]
    assert goal["success_rate"] == 0.75 and goal["tasks"] == 2 and long["success_rate"] == 0.0
    assert goal["stderr"] == pytest.approx(math.sqrt(0.25 / 4) / 2)  # only libero_goal:0 varies
    assert report["mean_success"] == pytest.approx(0.5)  # over tasks; the table's average is over suites
    console = Console(width=100, record=True)
    console.print(suite_table(report))
    text = console.export_text()
    assert "libero_goal" in text and "75% ± 12" in text and "38% ± 6" in text
    assert summarize({"reach-v3": _episodes([True])})["per_suite"] == {}


def test_video_names_are_portable_file_names():
    from vlarl.evaluate import video_name

    assert video_name("reach-v3", 7) == "reach-v3_init007.mp4"
    assert video_name("libero_spatial:3", 12) == "libero_spatial-3_init012.mp4"
