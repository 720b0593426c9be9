"""Tests of the supervisor: backoff schedule, reset after stable runs, give-up, clean stops."""

from __future__ import annotations

import itertools
import random

import pytest
import trio
import trio.testing

from trioshop.runtime import RestartPolicy, ServiceStatus, open_supervisor

POLICY = RestartPolicy(max_attempts=5, initial_delay=1, max_delay=4, jitter=0, stable_threshold=5)


class FlakyService:
    """Fails its first `failures` runs after `run_for` seconds, records when each run began."""

    def __init__(self, failures: int, run_for: float = 0.0) -> None:
        self.failures = failures
        self.run_for = run_for
        self.starts: list[float] = []

    async def __call__(self, *, task_status: trio.TaskStatus[None]) -> None:
        self.starts.append(trio.current_time())
        task_status.started()
        await trio.sleep(self.run_for)
        if len(self.starts) <= self.failures:
            raise RuntimeError(f"failure {len(self.starts)}")
        await trio.sleep_forever()


def gaps(starts: list[float]) -> list[float]:
    return [round(b - a, 6) for a, b in itertools.pairwise(starts)]


async def test_backoff_doubles_and_is_capped(autojump_clock: trio.testing.MockClock) -> None:
    """Restarts wait 1 s, 2 s, 4 s, then stay at max_delay (4 s)."""
    service = FlakyService(failures=4)
    async with open_supervisor() as supervisor:
        state = await supervisor.start("svc", service, POLICY)
        await trio.sleep(100)
        assert gaps(service.starts) == [1, 2, 4, 4]
        assert state.status is ServiceStatus.RUNNING
        assert state.restarts == 4


async def test_attempts_reset_after_stable_run(autojump_clock: trio.testing.MockClock) -> None:
    """A run longer than stable_threshold resets the backoff to initial_delay."""
    service = FlakyService(failures=3, run_for=10)
    async with open_supervisor() as supervisor:
        state = await supervisor.start("svc", service, POLICY)
        await trio.sleep(200)
        # each run lasts 10 s (stable), so every restart waits the initial 1 s
        assert gaps(service.starts) == [11, 11, 11]
        assert state.consecutive_failures == 1
        assert state.failures == 3


async def test_gives_up_after_max_attempts(autojump_clock: trio.testing.MockClock) -> None:
    """After max_attempts consecutive failures the service is FAILED and not restarted."""
    service = FlakyService(failures=100)
    async with open_supervisor() as supervisor:
        state = await supervisor.start("svc", service, POLICY)
        await trio.sleep(1000)
        assert len(service.starts) == 5
        assert state.status is ServiceStatus.FAILED
        assert supervisor.failed == ["svc"]
        assert "failure 5" in (state.last_error or "")


async def test_normal_return_is_not_restarted(autojump_clock: trio.testing.MockClock) -> None:
    """A service that returns is STOPPED and never started again."""
    runs = 0

    async def once(*, task_status: trio.TaskStatus[None]) -> None:
        nonlocal runs
        runs += 1
        task_status.started()

    async with open_supervisor() as supervisor:
        state = await supervisor.start("svc", once, POLICY)
        await trio.sleep(100)
        assert runs == 1
        assert state.status is ServiceStatus.STOPPED


async def test_cancellation_is_not_a_failure(autojump_clock: trio.testing.MockClock) -> None:
    """Shutting the supervisor down stops services without counting a failure or restarting."""
    service = FlakyService(failures=0)
    async with open_supervisor() as supervisor:
        state = await supervisor.start("svc", service, POLICY)
    assert state.status is ServiceStatus.STOPPED
    assert state.failures == 0
    assert len(service.starts) == 1


async def test_start_returns_even_if_first_attempt_fails(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A service failing before readiness does not block start(); it is retried in backoff."""

    async def broken(*, task_status: trio.TaskStatus[None]) -> None:
        raise RuntimeError("no config")

    async with open_supervisor() as supervisor:
        state = await supervisor.start("svc", broken, POLICY)
        assert state.status is ServiceStatus.BACKOFF
        assert state.failures == 1


def test_jitter_stays_within_bounds() -> None:
    """Jitter scales the delay by at most ±jitter."""
    policy = RestartPolicy(max_attempts=3, initial_delay=10, jitter=0.1)
    rng = random.Random(1)
    delays = [policy.delay(1, rng.uniform(-1, 1)) for _ in range(200)]
    assert min(delays) >= 9.0
    assert max(delays) <= 11.0
    assert len(set(delays)) > 1
    assert policy.delay(10) == pytest.approx(90.0)
