"""The Django-suite runner's bookkeeping (tests/django_suite/run.py), without running Django's
suite: which failures count. The suite itself runs in the ``django_suite`` nox sessions."""

from __future__ import annotations

from tests.django_suite.by_design import TIMING
from tests.django_suite.run import Outcome, failures, settle_timing

TIMING_ID = "serializers.test_deserialization.TestDeserializer.test_crafted_xml_performance"
OTHER_ID = "backends.tests.BackendTestCase.test_cursor_executemany"
OUTPUT = f"""
======================================================================
FAIL: test_crafted_xml_performance ({TIMING_ID}) [constant depth, varying length]
The time to process invalid inputs is not quadratic.
----------------------------------------------------------------------
======================================================================
ERROR: test_cursor_executemany ({OTHER_ID})
----------------------------------------------------------------------
Ran 5136 tests in 106.820s
"""


def _rerun(failed: set[str], ran: int | None, asked: list[list[str]]):
    def rerun(ids: list[str]) -> Outcome:
        asked.append(ids)
        return Outcome(args=("--parallel", "1"), ran=ran, failed=failed & set(ids))

    return rerun


def test_a_timing_check_that_passes_alone_is_not_counted_and_nothing_else_is_retried():
    assert TIMING_ID in TIMING
    outcome = Outcome(args=("--parallel", "2"), ran=5136, failed=failures(OUTPUT))
    assert outcome.unexpected() == [OTHER_ID, TIMING_ID]  # a subTest's id is the test's
    asked: list[list[str]] = []
    settle_timing(outcome, _rerun(set(), 1, asked))
    assert asked == [[TIMING_ID]]  # the other failure is never sent again
    assert outcome.unexpected() == [OTHER_ID]


def test_a_timing_check_that_fails_again_counts():
    outcome = Outcome(args=("--parallel", "2"), ran=5136, failed={TIMING_ID})
    settle_timing(outcome, _rerun({TIMING_ID}, 1, []))
    assert outcome.unexpected() == [TIMING_ID]


def test_a_rerun_that_did_not_finish_settles_nothing():
    outcome = Outcome(args=("--parallel", "2"), ran=5136, failed={TIMING_ID})
    settle_timing(outcome, _rerun(set(), None, []))
    assert outcome.unexpected() == [TIMING_ID]


def test_without_timing_failures_nothing_runs_again():
    outcome = Outcome(args=("--parallel", "2"), ran=5136, failed={OTHER_ID})
    asked: list[list[str]] = []
    settle_timing(outcome, _rerun(set(), 1, asked))
    assert asked == [] and outcome.unexpected() == [OTHER_ID]


DJANGO_42_TIMING_ID = "serializers.test_xml.XmlSerializerTestCase.test_crafted_xml_performance"


def test_the_timing_check_is_known_where_django_42_keeps_it():
    """Django 4.2 has the same check in test_xml: without its id there, a failure beside
    another matrix lane counted (CI's lanes run, django_suite(4.2))."""
    output = OUTPUT.replace(TIMING_ID, DJANGO_42_TIMING_ID)
    outcome = Outcome(args=("--parallel", "2"), ran=5126, failed=failures(output))
    asked: list[list[str]] = []
    settle_timing(outcome, _rerun(set(), 1, asked))
    assert asked == [[DJANGO_42_TIMING_ID]]
    assert outcome.unexpected() == [OTHER_ID]
