"""Without their daemons the cluster engine tests skip with the reason, but in CI they fail: CI never passes without
having run them."""
import pytest

from tests.cluster_util import _unavailable


def test_missing_daemons_skip_locally(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="sbatch: not installed"):
        _unavailable("sbatch: not installed")


def test_missing_daemons_fail_in_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="qsub daemons could not be started.*CI is set"):
        _unavailable("qsub daemons could not be started")
