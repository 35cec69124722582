"""The test suite's own hygiene: what one session leaves behind. The other half is conftest's
autouse `_nothing_written_into_the_checkout`, which fails a test that writes into runs/ or data/."""
from __future__ import annotations


def test_a_passing_tests_run_directories_are_removed_when_the_session_ends(pytestconfig):
    """Live and stack tests write tens of MB of histories, logs and databases under tmp_path;
    pytest keeps three sessions of them by default. Only a failing test's are kept."""
    assert pytestconfig.getini("tmp_path_retention_policy") == "failed"
