"""The balanced-deployment suite against the local stack: real nginx, three real API processes,
PostgreSQL loaded by the real loader (see conftest.py)."""

from __future__ import annotations

import signal

import pytest

from tests.e2e.balanced import BalancedDeploymentSuite, Deployment
from tests.e2e.conftest import LocalStack

VICTIM = "api-2"


@pytest.fixture(scope="module")
def deployment(local_stack: LocalStack) -> Deployment:
    def kill() -> None:
        local_stack.replicas[VICTIM].send_signal(signal.SIGKILL)
        local_stack.replicas[VICTIM].wait()

    def restart() -> None:
        if local_stack.replicas[VICTIM].poll() is not None:
            local_stack.restart_replica(VICTIM)

    return Deployment(url=local_stack.url, stop_replica=kill, restore_replica=restart)


class TestLocalStack(BalancedDeploymentSuite):
    pass
