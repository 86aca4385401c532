"""Nothing lost: every fault scenario of benchmarks/reliability.py ends with every source ID in the
queue (or the run visibly failed before any ID was taken), duplicates within the documented bound."""

from __future__ import annotations

import pytest

from testkit.fault_scenarios import (
    RUN_DUPLICATE_BOUND,
    SCENARIOS,
    Lab,
    interrupted_while_chunking,
    process_killed,
    storage_outage,
)

pytestmark = pytest.mark.own_azurite  # each scenario on a fresh Azurite, as the script runs them


@pytest.fixture
def lab(azurite) -> Lab:
    return Lab(azurite)


@pytest.mark.parametrize(
    ("scenario", "state"),
    [
        ("source_503", "completed"),
        ("source_429", "completed"),
        ("source_slow", "completed"),
        ("source_cut_short", "completed"),
        ("source_always_503", "failed"),
        ("source_non_json", "failed"),
        ("duplicate_trigger", "completed"),
        ("malformed_0", "completed"),
        ("malformed_1", "completed"),
        ("malformed_2", "completed"),
    ],
)
def test_fault_is_survived_with_nothing_lost_and_nothing_sent_twice(lab, scenario, state):
    outcome = SCENARIOS[scenario](lab)

    assert (outcome.state, outcome.lost, outcome.duplicates) == (state, 0, 0), outcome.what_happened


@pytest.mark.parametrize("scenario", [process_killed, storage_outage], ids=["process_killed", "storage_outage"])
def test_interrupted_run_resumes_with_nothing_lost_and_duplicates_bounded(lab, scenario):
    outcome = scenario(lab, count=3000)  # two chunks; benchmarks/reliability.py runs 6,000

    assert (outcome.state, outcome.lost) == ("completed", 0), outcome.what_happened
    assert outcome.duplicates <= RUN_DUPLICATE_BOUND, outcome.what_happened


def test_ctrl_c_while_chunking_keeps_the_progress_and_resume_lands_every_id_once(lab):
    interruption = interrupted_while_chunking(lab)

    assert interruption.exit_code == 130, interruption.outcome.what_happened
    status = interruption.interrupted
    assert status["state"] == "chunking", interruption.outcome.what_happened
    # every chunk known written (the third blob may be listed before its upload's answer reached the chunker)
    assert status["messages"]["fetched"] == status["chunks"]["total"] * 200 >= 400
    outcome = interruption.outcome
    assert (outcome.state, outcome.lost, outcome.duplicates) == ("completed", 0, 0), outcome.what_happened
