"""How a trial's restarts are named, tagged and described (tune_jobs/restarts.py), from Ray's own exceptions;
the sweep-level behaviour (a real node killed) is tests/test_node_loss.py."""

from __future__ import annotations

from ray.exceptions import ActorUnavailableError, NodeDiedError, RayActorError

from tune_jobs import report
from tune_jobs.restarts import (
    NODE_LOST,
    PREEMPTED,
    TAG_RESTART_LOG,
    failure_cause,
    parse_restart_log,
    restart_line,
    restart_sentence,
    restart_tags,
)


def test_causes_follow_what_tune_counts_against_max_failures() -> None:
    assert failure_cause(RayActorError(preempted=True)) == PREEMPTED  # a drained node: not counted by Tune
    assert failure_cause(RayActorError()) == NODE_LOST
    assert failure_cause(ActorUnavailableError("connection lost", None)) == NODE_LOST  # what a SIGKILLed node gives
    assert failure_cause(NodeDiedError("gone")) == NODE_LOST
    assert failure_cause(RuntimeError("CUDA error\nout of memory")) == "error: out of memory"
    assert failure_cause(None) == "error: unknown"


def test_tags_sentence_and_table_column() -> None:
    restarts = [{"iteration": 4, "cause": NODE_LOST, "node": "9a7c21e0ffff"}, {"iteration": 8, "cause": PREEMPTED}]
    assert restart_tags(restarts) == {"vidgan.restarts": "2", "vidgan.restart_log": "4:node lost,8:preempted"}
    assert restart_sentence(restarts) == ("Restarted twice (node lost, resumed from iteration 4 on node 9a7c21e0, "
                                          "preempted, resumed from iteration 8).")
    assert restart_sentence([]) == ""
    row = report.TrialRow(trial_id="a", variant="gp", dataset="d", seed=0, status="completed")
    assert "restarts" not in report.markdown([row])  # no column while nothing restarted
    row.restarts = 2
    assert "| restarts |" in report.markdown([row])


def test_the_summary_line_reads_the_same_from_the_run_tags() -> None:
    # `vidgan report` rebuilds the causes from the runs' tags; an error's text may hold commas and colons
    restarts = [{"iteration": 4, "cause": NODE_LOST}, {"iteration": 0, "cause": "error: a, b: 3,c"},
                {"iteration": 8, "cause": NODE_LOST}]
    causes = parse_restart_log(restart_tags(restarts)[TAG_RESTART_LOG])
    assert causes == [NODE_LOST, "error: a, b: 3,c", NODE_LOST]
    assert restart_line(causes) == "3 restarts from checkpoints (2 node lost, 1 error: a, b: 3,c)"
    assert restart_line([]) == "" and parse_restart_log("") == []
