"""The scheduler: one runner per fleet through a lease row, cron in a time zone,
failures alerted once."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from prometheus_client import CollectorRegistry

from monitor.scheduler import (
    Job,
    JobContext,
    JobService,
    cron_trigger,
    job_runs_started,
    status_rows,
)
from monitor.store import Store
from tests.integration.proxy import TcpProxy
from tests.jobs.seeded import config


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_weekly_report_cron_is_monday_0800_in_the_configured_time_zone() -> None:
    trigger = cron_trigger(config("sqlite://", "r").jobs.drift_report.cron, "Europe/Berlin")
    winter = trigger.get_next_fire_time(None, datetime(2026, 1, 7, 12, tzinfo=UTC))
    summer = trigger.get_next_fire_time(None, datetime(2026, 7, 1, 12, tzinfo=UTC))
    assert winter.astimezone(UTC) == datetime(2026, 1, 12, 7, 0, tzinfo=UTC)
    assert summer.astimezone(UTC) == datetime(2026, 7, 6, 6, 0, tzinfo=UTC)


@pytest.mark.integration
def test_the_lease_is_held_by_one_replica_and_lost_by_a_dead_one(pg_url: str,
                                                                 tmp_path: Path) -> None:
    cfg = config(pg_url, str(tmp_path), lease_ttl_s=30)
    store = Store(pg_url)
    store.migrate()
    clock = Clock(1000.0)
    a = JobService(cfg, store, instance_id="a", jobs={}, clock=clock)
    b = JobService(cfg, store, instance_id="b", jobs={}, clock=clock)
    assert a.lease.acquire() and not b.lease.acquire()
    clock.t += 20
    assert a.lease.acquire()  # renewed until 1050
    clock.t += 20
    assert not b.lease.acquire()
    clock.t += 11  # a died: no renewal for longer than the TTL
    assert b.lease.acquire() and not a.lease.acquire()
    assert a.lease.holder_now() == "b"
    b.lease.release()  # a clean shutdown hands over at once
    assert a.lease.acquire()
    store.close()


class _CutOnce(logging.Handler):
    """Cuts ``proxy`` when a record with ``text`` is logged, the first time only."""

    def __init__(self, proxy: TcpProxy, text: str) -> None:
        super().__init__()
        self.proxy, self.text, self.done = proxy, text, False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.done and self.text in record.getMessage():
            self.done = True
            self.proxy.cut()


@pytest.mark.integration
def test_a_store_outage_as_the_lease_is_taken_starts_the_jobs_at_the_next_renewal(
        pg_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # the lease is taken, then the store goes before the scheduler has read its job
    # table: the lease thread must live on and start the jobs once the store is back
    caplog.set_level(logging.INFO, logger="monitor.scheduler")
    with TcpProxy(("127.0.0.1", 5432)) as proxy:
        url = proxy.route(pg_url)
        store = Store(url)
        store.migrate()
        service = JobService(config(url, str(tmp_path)), store, instance_id="x",
                             registry=CollectorRegistry(),
                             jobs={"weekly": Job("weekly", "0 8 * * 1", lambda ctx, now: "")})
        cut = _CutOnce(proxy, "holds the scheduler lease")
        logging.getLogger("monitor.scheduler").addHandler(cut)
        try:
            assert service.tick(), "the lease, taken before the cut, is still held"
        finally:
            logging.getLogger("monitor.scheduler").removeHandler(cut)
        assert cut.done and service.scheduler is None
        assert "cannot start the scheduled jobs: store unreachable" in caplog.text
        proxy.restore()
        assert service.tick()
        assert [job.id for job in service.scheduler.get_jobs()] == ["weekly"]
        service.stop()
        store.close()


@pytest.mark.integration
@pytest.mark.slow
def test_two_schedulers_on_postgresql_run_a_due_job_once(pg_url: str, tmp_path: Path) -> None:
    cfg = config(pg_url, str(tmp_path), lease_ttl_s=2)
    runs: list[tuple[str, float]] = []
    lock = threading.Lock()

    def job(ctx: JobContext, now: float) -> str:
        with lock:
            runs.append((ctx.instance_id, now))
        return "ran"

    at = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0)
    cron = f"{at.second} {at.minute} {at.hour} {at.day} {at.month} *"
    services = []
    for name in ("a", "b"):
        store = Store(pg_url)
        store.migrate()
        services.append(JobService(cfg, store, instance_id=name, registry=CollectorRegistry(),
                                   jobs={"once": Job("once", cron, job)}))
    for s in services:
        s.start()
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline and not runs:
        time.sleep(0.1)
    time.sleep(1.5)  # a second runner would have fired by now
    leaders = [s.instance_id for s in services if s.scheduler is not None]
    for s in services:
        s.stop()
        s.store.close()
    assert len(runs) == 1
    assert leaders == [runs[0][0]]


def test_a_failing_job_alerts_once_and_resolves_when_it_works_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    store = Store(url)
    store.migrate()
    broken = {"yes": True}

    def flaky(ctx: JobContext, now: float) -> str:
        if broken["yes"]:
            raise RuntimeError("the reports volume is read-only")
        return "flaky: done"

    registry = CollectorRegistry()
    service = JobService(config(url, str(tmp_path)), store, instance_id="x", registry=registry,
                         jobs={"flaky": Job("flaky", "0 8 * * 1", flaky)}, clock=Clock(5000.0))
    results = [service.run_job("flaky") for _ in range(3)]
    assert [r.ok for r in results] == [False, False, False]
    broken["yes"] = False
    assert service.run_job("flaky").ok

    rows = [msgspec.json.decode(r.record) for r in store.outbox_after("x", limit=100)]
    assert [(r["status"], r["subject"]) for r in rows] == [
        ("firing", {"job": "flaky"}), ("resolved", {"job": "flaky"})]
    assert "read-only" in rows[0]["summary"]
    assert registry.get_sample_value("inferwatch_job_failures_total", {"job": "flaky"}) == 3
    assert registry.get_sample_value("inferwatch_job_last_success_timestamp_seconds",
                                     {"job": "flaky"}) == 5000.0
    (status,) = status_rows(store)
    assert (status["runs"], status["failures"], status["consecutive_failures"]) == (4, 3, 0)
    store.close()


@pytest.mark.slow
@pytest.mark.parametrize("grace_s", [3600, 1])
def test_a_run_missed_while_no_replica_led_runs_late_within_the_grace(
        tmp_path: Path, grace_s: int) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    cfg = config(url, str(tmp_path), lease_ttl_s=2, misfire_grace_s=grace_s)
    runs: list[str] = []
    at = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0)
    job = Job("daily", f"{at.second} {at.minute} {at.hour} * * *",
              lambda ctx, now: runs.append(ctx.instance_id) or "ran")
    store = Store(url)
    store.migrate()
    first = JobService(cfg, store, instance_id="a", registry=CollectorRegistry(),
                       jobs={"daily": job})
    assert first.tick()  # leader: the job and its next run time are stored
    first.stop()  # the fleet goes down before the run is due
    time.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds()) + 2.5)
    second = JobService(cfg, store, instance_id="b", registry=CollectorRegistry(),
                        jobs={"daily": job})
    assert second.tick()
    time.sleep(1.0)
    second.stop()
    store.close()
    assert runs == (["b"] if grace_s > 3 else [])


def test_jobs_status_command_shows_the_leader_and_the_last_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from monitor.cli import main

    url = f"sqlite:///{tmp_path / 's.db'}"
    store = Store(url)
    store.migrate()
    service = JobService(config(url, str(tmp_path)), store, instance_id="pod-1",
                         registry=CollectorRegistry())
    assert service.lease.acquire()
    assert service.run_job("cleanup").message == "cleanup: nothing to remove"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"store: {{url: '{url}'}}\n")
    assert main(["jobs", "status", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "scheduler lease: pod-1" in out
    assert "cleanup" in out and "runs    1" in out and "nothing to remove" in out
    store.close()


def test_a_bad_cron_or_time_zone_is_reported_with_its_key() -> None:
    from monitor.config import ConfigError, build_config

    with pytest.raises(ConfigError) as err:
        build_config({"jobs": {"timezone": "Europe/Berln",
                               "drift_report": {"cron": "0 8 * * 8"},
                               "compare": {"cron": "0 7 * *"}}}, env={})
    problems = "\n".join(err.value.problems)
    assert "jobs.timezone: Value error, unknown time zone 'Europe/Berln'" in problems
    assert "jobs.drift_report.cron:" in problems and "0-7" in problems
    assert "jobs.compare.cron:" in problems and "5 fields" in problems


def test_a_new_time_zone_moves_the_next_run_of_an_unchanged_cron(tmp_path: Path) -> None:
    """The stored next run time is kept only when the schedule is the same; the same
    cron line in another time zone is another schedule."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    store = Store(url)
    store.migrate()
    job = Job("compare", "0 7 * * *", lambda ctx, now: "ok")
    next_runs = {}
    for tz in ("UTC", "America/New_York"):
        service = JobService(config(url, str(tmp_path), timezone=tz), store, instance_id="a",
                             registry=CollectorRegistry(), jobs={"compare": job})
        assert service.tick()
        assert service.scheduler is not None
        next_runs[tz] = service.scheduler.get_job("compare").next_run_time
        service.stop()
    store.close()
    assert (next_runs["UTC"].hour, next_runs["America/New_York"].hour) == (7, 7)
    assert next_runs["America/New_York"].utcoffset() != timedelta(0)


def test_a_store_error_after_the_due_jobs_were_read_does_not_end_the_scheduler(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """APScheduler retries a job store that fails to list the due jobs, but an error
    a moment later (reading the next run time) ended its thread: the store dropping
    at that instant stopped every scheduled job until a restart. The failure is
    injected into that one call: a real outage cannot be timed between the two."""
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 's.db'}"
    store = Store(url)
    store.migrate()
    runs: list[float] = []
    at = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0)
    job = Job("soon", f"{at.second} {at.minute} {at.hour} * * *",
              lambda ctx, now: runs.append(now) or "ran")
    service = JobService(config(url, str(tmp_path)), store, instance_id="a",
                         registry=CollectorRegistry(), jobs={"soon": job})
    try:
        assert service.tick() and service.scheduler is not None
        sched = service.scheduler
        sched.jobstore_retry_interval = 0.5
        jobstore = sched._jobstores["default"]
        real = jobstore.get_next_run_time
        failed = []

        def once() -> object:
            if not failed:
                failed.append(True)
                raise sa.exc.OperationalError("SELECT", {}, Exception("server closed the "
                                                                      "connection"))
            return real()

        jobstore.get_next_run_time = once
        sched.wakeup()
        time.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds()) + 2.5)
        assert failed, "the injected failure was not reached"
        assert sched._thread.is_alive()
        assert len(runs) == 1  # the job due after the error still ran
        assert "scheduled jobs: store unreachable (OperationalError)" in caplog.text
    finally:
        service.stop()
        store.close()


def _until(done: Callable[[], object], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("late_s", [0.0, 7200.0])
def test_a_run_interrupted_by_a_stop_runs_again_on_the_next_leader(
        store_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, late_s: float) -> None:
    """APScheduler stores a job's next run time before it runs the job: a leader
    stopped mid-run (a rolling deploy, a lost lease, a crash) left the next leader
    nothing to run until the next occurrence, a week later for the drift report. The
    next leader runs it again with the ``now`` it had, if that is within
    ``misfire_grace_s`` (1 h here); an older one is skipped, with a warning."""
    cfg = config(store_url, str(tmp_path), lease_ttl_s=2)
    started: list[tuple[str, float]] = []
    finished: list[str] = []
    release = threading.Event()

    def report(ctx: JobContext, now: float) -> str:
        started.append((ctx.instance_id, now))
        if ctx.instance_id == "a":
            release.wait(30)  # still running when its replica stops
        finished.append(ctx.instance_id)
        return "report written"

    at = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0)
    job = Job("report", f"{at.second} {at.minute} {at.hour} * * *", report)
    store = Store(store_url)
    store.migrate()
    first = JobService(cfg, store, instance_id="a", registry=CollectorRegistry(),
                       jobs={"report": job})
    try:
        assert first.tick()
        _until(lambda: started, 6)
        assert [who for who, _ in started] == ["a"], "the scheduled run did not start"
        first.stop_wait_s = 0.5  # stop waits that long for the run, then leaves it
        first.stop()
        # the next leader: at once (late_s 0), or two hours later by its clock
        second = JobService(cfg, store, instance_id="b", registry=CollectorRegistry(),
                            jobs={"report": job}, clock=lambda: time.time() + late_s)
        assert second.tick()
        _until(lambda: "b" in finished, 4)
        second.stop()
    finally:
        release.set()
        _until(lambda: "a" in finished, 5)
        rows = status_rows(store) if "a" in finished else []
        store.close()
    (_, interrupted), *_ = started
    if late_s:
        assert started == [("a", interrupted)]
        assert "was interrupted" in caplog.text and "skipped" in caplog.text
        assert "misfire_grace_s" in caplog.text
    else:
        assert started == [("a", interrupted), ("b", interrupted)]
        assert "running it again" in caplog.text
    assert [(r["job"], r["runs"]) for r in rows] == [("report", 2 if not late_s else 1)]


def _started_rows(store: Store) -> list[tuple[str, float, int]]:
    import sqlalchemy as sa

    t = job_runs_started
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            sa.select(t.c.job, t.c.scheduled_at, t.c.starts).order_by(t.c.scheduled_at))]


def test_a_run_by_hand_leaves_no_run_to_repeat_and_clears_no_scheduled_one(
        store_url: str, tmp_path: Path) -> None:
    """Only a scheduled run is noted as started: a run by hand that the process
    leaves (a ^C) must not make the leader run it again, and one that ends while a
    scheduled run of the same job goes on must not take that run's note away."""
    store = Store(store_url)
    store.migrate()
    scheduled_at = 1_767_600_123.456789  # a fraction that must survive the store
    clock = Clock(scheduled_at)
    inside = threading.Event()
    release = threading.Event()

    def report(ctx: JobContext, now: float) -> str:
        if now == scheduled_at:
            inside.set()
            release.wait(10)
        return "report written"

    service = JobService(config(store_url, str(tmp_path)), store, instance_id="a",
                         registry=CollectorRegistry(), clock=clock,
                         jobs={"report": Job("report", "0 8 * * 1", report)})
    assert service.run_job("report", now=scheduled_at - 60).ok
    assert _started_rows(store) == []
    scheduled = threading.Thread(target=service.run_scheduled, args=("report",))
    scheduled.start()
    try:
        assert inside.wait(5)
        assert _started_rows(store) == [("report", scheduled_at, 1)]
        assert service.run_job("report", now=scheduled_at + 60).ok
        assert _started_rows(store) == [("report", scheduled_at, 1)]
    finally:
        release.set()
        scheduled.join(10)
    assert _started_rows(store) == []  # its outcome is recorded
    (status,) = status_rows(store)
    assert status["runs"] == 3
    store.close()


def test_an_interrupted_run_is_run_again_once_and_only_while_its_job_exists(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 's.db'}"
    store = Store(url)
    store.migrate()
    now = time.time()
    with store.engine.begin() as conn:
        conn.execute(sa.insert(job_runs_started), [
            {"job": "report", "scheduled_at": now - 60, "runner": "a", "started_at": now - 60,
             "starts": 1},  # interrupted once: runs again
            {"job": "compare", "scheduled_at": now - 30, "runner": "a", "started_at": now,
             "starts": 2},  # interrupted on its re-run too: not a third time
            {"job": "cleanup", "scheduled_at": now - 10, "runner": "a", "started_at": now,
             "starts": 0},  # due as its replica stopped, never began: runs
            {"job": "retired", "scheduled_at": now - 20, "runner": "a", "started_at": now,
             "starts": 1},  # no longer configured
        ])
    runs: list[tuple[str, float]] = []

    def job(name: str) -> Job:
        return Job(name, "0 8 * * 1", lambda ctx, at: runs.append((name, at)) or "ok")

    service = JobService(config(url, str(tmp_path)), store, instance_id="b",
                         registry=CollectorRegistry(),
                         jobs={n: job(n) for n in ("report", "compare", "cleanup")})
    try:
        assert service.tick()
        _until(lambda: len(runs) >= 2 and not _started_rows(store), 5)
        time.sleep(0.3)
    finally:
        service.stop()
    assert sorted(runs) == [("cleanup", now - 10), ("report", now - 60)]
    assert _started_rows(store) == []
    assert "job compare: its run of" in caplog.text and "again on its re-run: skipped" in caplog.text
    assert "was due as a stopped: running it again" in caplog.text
    assert "job retired:" in caplog.text and "no longer configured: dropped" in caplog.text
    store.close()


@pytest.mark.parametrize("why", ["lease lost", "stopping"])
def test_a_run_due_on_a_replica_that_lost_the_lease_runs_on_the_leader(
        store_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, why: str) -> None:
    """APScheduler moves a job's next run time in the shared job table before it calls
    the job. A replica whose lease had passed to another (a long pause), its scheduler
    not stopped yet, skipped the run it was called for, and the new leader, whose
    scheduler was already going, found nothing due until the next occurrence: the
    week's drift report was lost. A run due as its replica stops was noted, but only a
    replica taking over looked for it, and the leader had taken over already. Either
    run is left to the leader, which takes it at its next renewal and runs it once,
    with the ``now`` it had."""
    cfg = config(store_url, str(tmp_path), lease_ttl_s=30)
    store = Store(store_url)
    store.migrate()
    clock = Clock(1_767_600_000.0)
    runs: list[tuple[str, float]] = []

    def report(ctx: JobContext, now: float) -> str:
        runs.append((ctx.instance_id, now))
        return "report written"

    job = Job("report", "0 8 * * 1", report)
    a, b = (JobService(cfg, store, instance_id=name, registry=CollectorRegistry(), clock=clock,
                       jobs={"report": job}) for name in ("a", "b"))
    try:
        assert a.tick() and a.scheduler is not None
        if why == "stopping":
            a.stop()  # hands the lease over
        else:
            clock.t += 31  # a renews no more (paused): its lease expires
        assert b.tick() and b.scheduler is not None  # b leads, its scheduler going
        due = clock.t
        # a's scheduler (or, after stop(), its executor) calls the weekly run, whose next
        # run time APScheduler has stored already
        assert a.run_scheduled("report") is None
        assert ("is stopping" if why == "stopping" else "no longer holds the scheduler "
                "lease") in caplog.text
        clock.t += 10  # b's next renewal
        assert b.tick()
        _until(lambda: runs and not _started_rows(store), 5)
        assert b.tick()  # a later renewal runs it no second time
        time.sleep(0.3)
    finally:
        a.stop()
        b.stop()
    assert runs == [("b", due)]
    assert _started_rows(store) == []
    assert "was left to the leader by a: running it again" in caplog.text
    (status,) = status_rows(store)
    assert (status["runs"], status["last_runner"]) == (1, "b")
    store.close()


@pytest.mark.slow
def test_a_cron_fire_on_a_replica_that_lost_the_lease_runs_on_the_next_leader(
        store_url: str, tmp_path: Path) -> None:
    """The same with APScheduler's own fire: the lease passes to ``b`` just before the
    run is due, ``a``'s scheduler fires it (and stores the next day's run time), and
    ``b``'s scheduler, started after that, runs the day's run."""
    cfg = config(store_url, str(tmp_path), lease_ttl_s=30)
    store = Store(store_url)
    store.migrate()
    clock = Clock(1_767_600_000.0)
    runs: list[tuple[str, float]] = []
    at = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0)
    job = Job("daily", f"{at.second} {at.minute} {at.hour} * * *",
              lambda ctx, now: runs.append((ctx.instance_id, now)) or "ran")
    a, b = (JobService(cfg, store, instance_id=name, registry=CollectorRegistry(), clock=clock,
                       jobs={"daily": job}) for name in ("a", "b"))
    try:
        assert a.tick() and a.scheduler is not None
        clock.t += 31
        assert b.lease.acquire()  # b takes the lease; its next renewal starts its jobs
        _until(lambda: a.scheduler is None, 6)  # a's scheduler fired, found the lease gone
        assert a.scheduler is None and runs == []
        assert b.tick() and b.scheduler is not None
        next_run = b.scheduler.get_job("daily").next_run_time
        assert next_run.astimezone(UTC) == at + timedelta(days=1)
        _until(lambda: runs, 4)
    finally:
        a.stop()
        b.stop()
    assert runs == [("b", clock.t)]
    assert _started_rows(store) == []
    store.close()


def _leader(store_url: str, tmp_path: Path, clock: Clock,
            runs: list[tuple[str, float]]) -> tuple[Store, JobService]:
    """A store and replica ``b``, leading, with three weekly jobs that note their runs."""
    store = Store(store_url)
    store.migrate()

    def job(name: str) -> Job:
        return Job(name, "0 8 * * 1", lambda ctx, at: runs.append((name, at)) or "ok")

    b = JobService(config(store_url, str(tmp_path), lease_ttl_s=30), store, instance_id="b",
                   registry=CollectorRegistry(), clock=clock,
                   jobs={n: job(n) for n in ("report", "compare", "cleanup")})
    assert b.tick() and b.scheduler is not None
    return store, b


MONDAY_0800 = 1_767_600_000.0  # 2026-01-05 08:00 UTC: a fire time of the weekly jobs
WEEK = 7 * 86_400.0


def test_a_lease_renewal_takes_only_the_runs_left_to_the_leader(
        store_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """What the leader's renewal takes from job_runs_started: a run left to it, within
    ``misfire_grace_s``, but not one that began on another replica: that one may still
    be going on there, and only a replica taking over runs it again."""
    import sqlalchemy as sa

    clock = Clock(MONDAY_0800 + 5)
    runs: list[tuple[str, float]] = []
    store, b = _leader(store_url, tmp_path, clock, runs)
    at = MONDAY_0800
    try:
        left = {"runner": "a", "starts": 0}
        with store.engine.begin() as conn:
            conn.execute(sa.insert(job_runs_started), [
                # left by a: runs
                {"job": "report", "scheduled_at": at + 1, "started_at": at + 1,
                 "left_at": at + 1, **left},
                # began on a, which may still be running it: left alone
                {"job": "compare", "scheduled_at": at, "runner": "a", "started_at": at,
                 "starts": 1, "left_at": None},
                # left, but two hours ago: skipped
                {"job": "cleanup", "scheduled_at": at - 7200, "started_at": at - 7200,
                 "left_at": at - 7200, **left},
            ])
        assert b.tick()
        _until(lambda: runs and len(_started_rows(store)) == 1, 5)
        assert b.tick()
        time.sleep(0.3)
    finally:
        b.stop()
    assert runs == [("report", at + 1)]
    assert _started_rows(store) == [("compare", at, 1)]
    assert "job cleanup: its run of 2026-01-05T06:00:00+00:00 was left to the leader by a, " \
           "2.0h ago, more than jobs.misfire_grace_s" in caplog.text
    store.close()


def test_the_leader_drops_a_left_run_of_an_occurrence_it_ran_itself(
        store_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """As the lease changes hands, the leader's scheduler and that of the replica that
    has just lost it can both fire one occurrence; the one that finds the lease gone
    leaves its run, and the leader, having run that occurrence, drops it. A left run of
    the next occurrence still runs."""
    import sqlalchemy as sa

    clock = Clock(MONDAY_0800)
    runs: list[tuple[str, float]] = []
    store, b = _leader(store_url, tmp_path, clock, runs)

    def left_by_a(at: float) -> None:
        with store.engine.begin() as conn:
            conn.execute(sa.insert(job_runs_started).values(
                job="report", scheduled_at=at, runner="a", started_at=at, starts=0,
                left_at=at))

    try:
        assert b.run_scheduled("report") is not None  # b's own fire of this Monday's run
        clock.t += 5
        left_by_a(MONDAY_0800 + 2)  # a's fire of the same run
        assert b.tick()
        assert _started_rows(store) == []  # dropped at once: nothing queued
        clock.t = MONDAY_0800 + WEEK + 5
        left_by_a(MONDAY_0800 + WEEK + 1)  # next Monday's, fired by a only
        assert b.tick()
        _until(lambda: len(runs) == 2 and not _started_rows(store), 5)
    finally:
        b.stop()
    assert runs == [("report", MONDAY_0800), ("report", MONDAY_0800 + WEEK + 1)]
    assert "b began that occurrence's run itself (with now 2026-01-05T08:00:00+00:00): " \
           "dropped" in caplog.text
    store.close()
