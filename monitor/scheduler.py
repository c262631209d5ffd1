"""Scheduled jobs: APScheduler 3 inside the daemon, one runner per fleet.

Every replica runs a ``JobService``. It competes for one lease row in the store
(``scheduler_leases``); the holder renews it every third of ``jobs.lease_ttl_s``
and is the only replica whose APScheduler runs. A replica that dies stops
renewing and loses the lease after ``lease_ttl_s``; the next replica to find it
expired takes it over. Each run re-checks the lease first, so a replica that
lost it (a long pause, a partition from the store) does not run a job the new
holder also runs; it leaves the run to the leader (below).

APScheduler keeps its jobs in the same database (``SQLAlchemyJobStore``, table
``inferwatch_scheduler_jobs``), so the next run time survives restarts and
fail-overs. Misfires: a run missed (no leader, daemon down) by less than
``jobs.misfire_grace_s`` still runs when a leader comes up; older missed runs
are skipped. With ``jobs.coalesce`` (the default) several missed runs of a job
run once. At most one instance of a job runs at a time.

APScheduler stores a job's next run time in the shared table before it runs the
job, so a run its replica stopped in the middle of (a rolling deploy, SIGTERM, a
crash, a lost lease), or did not start (the replica was stopping, or its scheduler
fired the run after the lease had passed to another), would wait for the next
occurrence: a week for the drift report. A scheduled run therefore writes a row to
``job_runs_started`` (the job, and the ``now`` it runs with) before it starts; the
transaction that records its outcome in ``job_status`` removes it. A run not started
is written there too, its ``starts`` unchanged, as left to the leader (``left_at``).

A replica that becomes the leader runs each run it finds there again; while it
leads, each lease renewal takes the runs left to it since, but not those that began
elsewhere (one may still be going on on a replica that lost the lease). Each runs
once, with its original ``now``, if that is at most ``jobs.misfire_grace_s`` old (the
misfire rule above); an older one is skipped with a warning, and so is one
interrupted again on its re-run. A left run is taken by one leader only (an update
of its row), and dropped when the leader began a run of the same cron occurrence
itself (the leader's scheduler and that of a replica that has just lost the lease
can both fire it). Runs are therefore at least once: a run that was still going on a
replica that lost the lease can also be run by the next leader. ``stop()`` waits a
short while (``STOP_WAIT_S``, shared with the lease thread) for a running job, then
leaves it to the next leader. Runs by hand (``run_job``) leave no row.

A failing job alerts once (on its first failure after a success) and resolves
when it next succeeds; its last message, duration and failures are in the
``job_status`` table and in the metrics.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy.dialects import postgresql, sqlite

from alerts.model import Alert, canonical_json, fingerprint
from alerts.outbox import OutboxEntry
from monitor.config import Config, crontab_fields
from monitor.store import Store, StoredAlert, alerts, metadata

log = logging.getLogger(__name__)

JOB_TABLE = "inferwatch_scheduler_jobs"
LEASE = "scheduler"
STOP_WAIT_S = 10.0  # stop(): the lease thread, then a running job; deploy/helm counts it

scheduler_leases = sa.Table(
    "scheduler_leases", metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),  # Unix seconds, holder's clock
    sa.Column("acquired_at", sa.Float, nullable=False),
)

job_status = sa.Table(
    "job_status", metadata,
    sa.Column("job", sa.String(100), primary_key=True),
    sa.Column("runs", sa.Integer, nullable=False),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("consecutive_failures", sa.Integer, nullable=False),
    sa.Column("last_run_at", sa.Float, nullable=True),
    sa.Column("last_success_at", sa.Float, nullable=True),
    sa.Column("last_failure_at", sa.Float, nullable=True),
    sa.Column("last_duration_s", sa.Float, nullable=True),
    sa.Column("last_message", sa.Text, nullable=True),
    sa.Column("last_runner", sa.String(200), nullable=True),
)

# A scheduled run that is not recorded in job_status yet: running now, interrupted (its
# replica stopped mid-run), or left to the leader unstarted (``left_at``: it came due on
# a replica that was stopping or no longer held the lease). A replica that becomes the
# leader runs the interrupted and left ones again; the leader takes one left while it
# leads at its next lease renewal.
job_runs_started = sa.Table(
    "job_runs_started", metadata,
    sa.Column("job", sa.String(100), primary_key=True),
    sa.Column("scheduled_at", sa.Float, primary_key=True),  # the run's ``now``
    sa.Column("runner", sa.String(200), nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("starts", sa.Integer, nullable=False),  # 1; 2 once run again; 0: never began
    sa.Column("left_at", sa.Float, nullable=True),  # when left to the leader; NULL once taken
)


def cron_trigger(expr: str, timezone: str) -> Any:
    """An APScheduler CronTrigger from 5 fields (minute first) or 6 (seconds first);
    weekdays count as in crontab (1 = Monday, 0 or 7 = Sunday)."""
    from apscheduler.triggers.cron import CronTrigger

    return CronTrigger(**crontab_fields(expr), timezone=timezone)


class Lease:
    """A row that one holder owns until ``expires_at``; others may take it after."""

    def __init__(self, engine: sa.Engine, holder: str, *, ttl_s: float, name: str = LEASE,
                 clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.holder = holder
        self.ttl_s = ttl_s
        self.name = name
        self.clock = clock
        self.valid_until = 0.0

    def acquire(self) -> bool:
        """Take or renew the lease; True when this holder has it now."""
        t = scheduler_leases
        now = self.clock()
        with self.engine.begin() as conn:
            # RETURNING, not rowcount: psycopg counts an ON CONFLICT DO NOTHING as a row
            done = conn.execute(
                t.update()
                .where(t.c.name == self.name,
                       sa.or_(t.c.holder == self.holder, t.c.expires_at < now))
                .values(holder=self.holder, expires_at=now + self.ttl_s,
                        acquired_at=sa.case((t.c.holder == self.holder, t.c.acquired_at),
                                            else_=now))
                .returning(t.c.name)
            ).first() is not None
            if not done:
                dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
                done = conn.execute(
                    dialect.insert(t).values(name=self.name, holder=self.holder,
                                             expires_at=now + self.ttl_s, acquired_at=now)
                    .on_conflict_do_nothing(index_elements=["name"])
                    .returning(t.c.name)
                ).first() is not None
        self.valid_until = now + self.ttl_s if done else 0.0
        return bool(done)

    def release(self) -> None:
        t = scheduler_leases
        with self.engine.begin() as conn:
            conn.execute(t.update().where(t.c.name == self.name, t.c.holder == self.holder)
                         .values(expires_at=0.0))
        self.valid_until = 0.0

    def holder_now(self) -> str | None:
        t = scheduler_leases
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.c.holder, t.c.expires_at)
                               .where(t.c.name == self.name)).first()
        return row.holder if row is not None and row.expires_at >= self.clock() else None


class JobMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry()
        self.last_success = Gauge(
            "inferwatch_job_last_success_timestamp_seconds",
            "When each scheduled job last succeeded (Unix time).", ["job"], registry=r)
        self.duration = Histogram(
            "inferwatch_job_duration_seconds", "Run time of scheduled jobs.", ["job"],
            buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 1800), registry=r)
        self.runs = Counter(
            "inferwatch_job_runs_total", "Scheduled job runs, by result (ok, failed).",
            ["job", "result"], registry=r)
        self.failures = Counter(
            "inferwatch_job_failures_total", "Scheduled job runs that failed.", ["job"],
            registry=r)
        self.leader = Gauge(
            "inferwatch_scheduler_leader", "1 when this replica holds the scheduler lease.",
            registry=r)


@dataclass
class JobContext:
    """What a job gets: the config, the store, the clock and a way to alert."""

    config: Config
    store: Store
    instance_id: str
    clock: Callable[[], float] = time.time

    def emit(self, *, detector: str, kind: str, severity: str, model: str, model_version: str,
             subject: dict[str, str], summary: str, evidence: dict[str, Any],
             status: str = "firing", keep: bool = False) -> dict[str, Any]:
        """Send an alert record through the normal path (the outbox, delivered by the
        daemon's dispatcher to every sink). ``keep`` also stores it in ``alerts``
        (a condition that holds until resolved); otherwise it is a one-off notice,
        marked ``evidence.notice`` so the notifier posts it once and never repeats it."""
        now = self.clock()
        if not keep and status == "firing":
            evidence = {**evidence, "notice": True}
        fp = fingerprint(detector, model, subject)
        previous = self.firing_alert(fp)
        alert = Alert(fingerprint=fp, detector=detector, kind=kind, severity=severity,
                      status=status, model=model, model_version=model_version,
                      subject=dict(subject), summary=summary,
                      first_seen=previous.first_seen if previous else now, last_seen=now,
                      count=previous.count + 1 if previous else 1, evidence=evidence)
        record = alert.record()
        raw = canonical_json(record).decode()
        stored = []
        meta: dict[str, dict[str, Any]] = {}
        if keep or previous is not None:
            stored = [StoredAlert(fp, alert.status, raw, pickle.dumps(alert))]
            meta[fp] = {"alert_id": alert.id, "detector": detector, "kind": kind,
                        "severity": severity, "model": model, "first_seen": alert.first_seen,
                        "last_seen": now}
        # no delivery key: a job's record is written once, not raised again by a replay
        entry = OutboxEntry(None, fp, raw)
        self.store.save_checkpoint(self.instance_id, {}, [entry], stored, meta)
        return record

    def firing_alerts(self, detector: str) -> list[Alert]:
        """The stored alerts of ``detector`` that are firing."""
        return [pickle.loads(a.state) for a in self.store.firing_alerts(detector)]

    def firing_alert(self, fp: str) -> Alert | None:
        with self.store.engine.connect() as conn:
            row = conn.execute(sa.select(alerts.c.state).where(
                alerts.c.fingerprint == fp, alerts.c.status == "firing")).first()
        return None if row is None else pickle.loads(row.state)


def _store_tolerant_scheduler() -> type:
    """APScheduler's BackgroundScheduler, kept alive through a store outage.

    APScheduler 3 waits and retries when its job store fails to list the due jobs,
    but not when the store fails a moment later (the next run time, a job's update):
    that error ended its thread, and no job ran again until the daemon restarted.
    Here such an error is logged and the jobs are looked at again after the job
    store retry interval; a job whose new run time was not stored yet runs again
    then (at least once, as the lease already allows)."""
    from apscheduler.schedulers.background import BackgroundScheduler

    class StoreTolerantScheduler(BackgroundScheduler):
        def _process_jobs(self) -> float | None:
            try:
                return super()._process_jobs()
            except sa.exc.SQLAlchemyError as exc:
                log.warning("scheduled jobs: store unreachable (%s); looking again in %gs",
                            type(exc).__name__, self.jobstore_retry_interval)
                return float(self.jobstore_retry_interval)

    return StoreTolerantScheduler


JobFunc = Callable[[JobContext, float], str]


@dataclass(frozen=True)
class Job:
    name: str
    cron: str
    func: JobFunc


def default_jobs(config: Config) -> dict[str, Job]:
    from monitor import compare, drift_report

    j = config.jobs
    jobs = [Job("cleanup", j.cleanup.cron, cleanup_job)]
    if j.compare.enabled:
        jobs.append(Job("compare", j.compare.cron, compare.compare_job))
        if j.compare.released_versions:
            jobs.append(Job("versions", j.compare.versions_cron, compare.versions_job))
    if j.drift_report.enabled:
        jobs.append(Job("drift_report", j.drift_report.cron, drift_report.report_job))
    return {job.name: job for job in jobs}


def cleanup_job(ctx: JobContext, now: float) -> str:
    from monitor import summaries

    s = ctx.config.jobs.summaries
    deleted = summaries.delete_before(ctx.store.engine, now - s.retention_days * 86400)
    merged = summaries.compact(ctx.store.engine, now - s.compact_after_s, s.sample_size)
    if not deleted and not merged:
        return "cleanup: nothing to remove"
    return (f"cleanup: removed {deleted} summary row(s) older than {s.retention_days:g} days, "
            f"merged {merged} partition row(s) into their buckets")


_SERVICES: dict[str, JobService] = {}


def _run_scheduled(key: str, name: str, now: float | None = None, starts: int = 0) -> None:
    """What APScheduler calls (a module-level function: its job store pickles a
    reference); ``now`` and ``starts`` only for the re-run of an interrupted run."""
    service = _SERVICES.get(key)
    if service is None:
        log.warning("job %s: its scheduler is gone; skipped", name)
        return
    service.run_scheduled(name, now, starts=starts)


@dataclass(frozen=True)
class JobResult:
    job: str
    ok: bool
    message: str
    duration_s: float


class JobService:
    """The lease loop and, while this replica holds the lease, the APScheduler."""

    stop_wait_s = STOP_WAIT_S

    def __init__(self, config: Config, store: Store, *, registry: CollectorRegistry | None = None,
                 instance_id: str | None = None, jobs: dict[str, Job] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.store = store
        self.instance_id = instance_id or config.instance_id
        self.jobs = default_jobs(config) if jobs is None else jobs
        self.clock = clock
        self.metrics = JobMetrics(registry)
        self.lease = Lease(store.engine, self.instance_id, ttl_s=config.jobs.lease_ttl_s,
                           clock=clock)
        self.ctx = JobContext(config, store, self.instance_id, clock)
        self.key = uuid.uuid4().hex
        self.scheduler: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._running: dict[str, float] = {}  # scheduled runs going on here: job -> now
        self._began: dict[str, float] = {}  # the latest scheduled run begun here: job -> now
        self._idle = threading.Condition()

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="jobs-lease", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the lease thread and the scheduler, waiting at most ``stop_wait_s`` for
        both the thread and a running job; a job still running then is abandoned (its
        run is left to the next leader), and the lease released."""
        deadline = time.monotonic() + self.stop_wait_s
        self._stop.set()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        self._stop_scheduler()
        with self._idle:
            if not self._idle.wait_for(lambda: not self._running,
                                       max(0.0, deadline - time.monotonic())):
                log.warning("stopping with job(s) %s still running: the next leader runs "
                            "them again", ", ".join(sorted(self._running)))
        if self.lease.valid_until:
            try:
                self.lease.release()
            except sa.exc.SQLAlchemyError as exc:
                log.warning("could not release the scheduler lease: %s", exc)
        _SERVICES.pop(self.key, None)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.config.jobs.lease_ttl_s / 3)

    def tick(self) -> bool:
        """Take or renew the lease; start or stop the scheduler to match."""
        try:
            held = self.lease.acquire()
        except sa.exc.SQLAlchemyError as exc:
            log.warning("scheduler lease: store unreachable (%s)", str(exc).splitlines()[0])
            held = self.clock() < self.lease.valid_until - self.config.jobs.lease_ttl_s / 3
        self.metrics.leader.set(1 if held else 0)
        if held and self.scheduler is None and not self._stop.is_set():
            log.info("%s holds the scheduler lease: running %s", self.instance_id,
                     ", ".join(sorted(self.jobs)) or "no jobs")
            self._restore_metrics()
            try:
                self._start_scheduler()
            except sa.exc.SQLAlchemyError as exc:  # its job table is in the store
                log.warning("cannot start the scheduled jobs: store unreachable (%s); retrying "
                            "at the next lease renewal", str(exc).splitlines()[0])
        elif held and self.scheduler is not None and not self._stop.is_set():
            self._take_left_runs()
        elif not held and self.scheduler is not None:
            log.info("%s lost the scheduler lease: jobs stop here", self.instance_id)
            self._stop_scheduler()
        return held

    def _take_left_runs(self) -> None:
        """Runs left to the leader since this replica's scheduler started (a replica that
        lost the lease or was stopping when they came due) run here, as on taking over."""
        try:
            with self._lock:
                if self.scheduler is not None:
                    self._rerun_interrupted(self.scheduler, left_only=True)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("could not look for scheduled runs left to the leader (store "
                        "unreachable: %s); looking again at the next lease renewal",
                        str(exc).splitlines()[0])

    def _restore_metrics(self) -> None:
        """The fleet's last successes, so an overdue-job alert survives a fail-over."""
        try:
            for row in status_rows(self.store):
                if row["last_success_at"] and row["job"] in self.jobs:
                    self.metrics.last_success.labels(row["job"]).set(row["last_success_at"])
        except sa.exc.SQLAlchemyError as exc:
            log.warning("could not read job status: %s", exc)

    def _start_scheduler(self) -> None:
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.jobstores.memory import MemoryJobStore
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

        j = self.config.jobs
        _SERVICES[self.key] = self
        with self._lock:
            sched = _store_tolerant_scheduler()(
                jobstores={"default": SQLAlchemyJobStore(engine=self.store.engine,
                                                         tablename=JOB_TABLE),
                           "reruns": MemoryJobStore()},
                executors={"default": ThreadPoolExecutor(1)},
                job_defaults={"coalesce": j.coalesce, "misfire_grace_time": int(j.misfire_grace_s),
                              "max_instances": 1},
                timezone=j.timezone,
            )
            sched.start(paused=True)
            try:
                self._schedule(sched)
                self._rerun_interrupted(sched)
            except BaseException:
                sched.shutdown(wait=False)
                raise
            sched.resume()
            self.scheduler = sched

    def _schedule(self, sched: Any) -> None:
        """Put this configuration's jobs in the (paused) scheduler's job table: a job
        whose cron and time zone are unchanged keeps its next run time (a missed run's too), a job no
        longer configured goes."""
        tz = self.config.jobs.timezone
        stored = {job.id: job for job in sched.get_jobs()}
        for name, job in self.jobs.items():
            trigger = cron_trigger(job.cron, tz)
            old = stored.pop(name, None)
            extra: dict[str, Any] = {}
            # repr, not str: str leaves out the time zone
            if old is not None and repr(old.trigger) == repr(trigger) and old.next_run_time:
                extra["next_run_time"] = old.next_run_time  # keep a missed run's time
            sched.add_job(_run_scheduled, trigger, id=name, name=name, args=[self.key, name],
                          replace_existing=True, **extra)
        for name in stored:
            sched.remove_job(name)

    def _rerun_interrupted(self, sched: Any, *, left_only: bool = False) -> None:
        """Queue again, in the scheduler (paused, as this replica takes over), the
        scheduled runs that were never recorded, each with its own ``now``: once, and
        only within ``misfire_grace_s`` of it, as APScheduler treats a missed run.
        ``left_only``: only the runs left to the leader unstarted (a lease renewal's
        look; a run that began elsewhere may still be going on there)."""
        t = job_runs_started
        grace = self.config.jobs.misfire_grace_s
        now = self.clock()
        with self.store.engine.begin() as conn:
            rows = [] if left_only else conn.execute(
                sa.select(t).where(t.c.left_at.is_(None))).all()
            # a left run is taken, by one leader, once: no later look here or elsewhere
            # takes it again (a taken run is then like one interrupted before it began)
            left = conn.execute(t.update().where(t.c.left_at.is_not(None))
                                .values(left_at=None).returning(*t.c)).all()
        with self._idle:
            here = dict(self._running)
        gone = []
        for row in sorted([*rows, *left], key=lambda r: r.scheduled_at):
            if here.get(row.job) == row.scheduled_at:
                continue  # still running on this replica: its own outcome clears it
            what = f"its run of {_utc(row.scheduled_at)} " + (
                f"was left to the leader by {row.runner}" if row in left
                else f"was due as {row.runner} stopped" if row.starts == 0
                else f"was interrupted on {row.runner}")
            if row.job not in self.jobs:
                log.info("job %s: %s, and the job is no longer configured: dropped",
                         row.job, what)
            elif now - row.scheduled_at > grace:
                log.warning("job %s: %s, %s ago, more than jobs.misfire_grace_s (%gs): "
                            "skipped, as a run missed by that much is", row.job, what,
                            _duration(now - row.scheduled_at), grace)
            elif row.starts >= 2:
                log.warning("job %s: %s, and again on its re-run: skipped, it is not run a "
                            "third time (a run that stops its replica would stop each "
                            "leader in turn)", row.job, what)
            elif (began := self._began_same_occurrence(row.job, row.scheduled_at)) is not None:
                log.info("job %s: %s, and %s began that occurrence's run itself (with "
                         "now %s): dropped", row.job, what, self.instance_id, _utc(began))
            else:
                log.warning("job %s: %s: running it again", row.job, what)
                sched.add_job(_run_scheduled, "date", id=f"{row.job}@{row.scheduled_at!r}",
                              name=f"{row.job} (the run of {_utc(row.scheduled_at)} again)",
                              args=[self.key, row.job, row.scheduled_at, row.starts],
                              jobstore="reruns", misfire_grace_time=None,
                              replace_existing=True)
                continue
            gone.append((row.job, row.scheduled_at))
        if gone:
            with self.store.engine.begin() as conn:
                for job, scheduled_at in gone:
                    conn.execute(t.delete().where(t.c.job == job,
                                                  t.c.scheduled_at == scheduled_at))

    def _began_same_occurrence(self, name: str, at: float) -> float | None:
        """The ``now`` of this replica's latest scheduled run of ``name`` if no fire time
        of its cron falls between that and ``at``: the leader's scheduler and that of a
        replica that has just lost the lease can both fire one occurrence, and the one
        that finds the lease gone leaves its run to the leader."""
        with self._idle:
            mine = self._began.get(name)
        if mine is None:
            return None
        low, high = sorted((mine, at))
        after = datetime.fromtimestamp(low, UTC) + timedelta(microseconds=1)
        fire = cron_trigger(self.jobs[name].cron, self.config.jobs.timezone) \
            .get_next_fire_time(None, after)
        return mine if fire is None or fire.timestamp() > high else None

    def _stop_scheduler(self) -> None:
        with self._lock:
            sched, self.scheduler = self.scheduler, None
        if sched is not None:
            sched.shutdown(wait=False)

    # -- running ----------------------------------------------------------------------
    def run_scheduled(self, name: str, now: float | None = None, *,
                      starts: int = 0) -> JobResult | None:
        """A scheduled run: only while this replica still holds the lease. It is noted
        in ``job_runs_started`` first, so that the next leader runs it again if this
        replica stops before its outcome is recorded. A run due as this replica stops,
        or after it lost the lease (APScheduler has stored the job's next run time
        already), is noted as left to the leader, which runs it. ``now`` and ``starts``
        (how often it began before): an interrupted run's."""
        at = self.clock() if now is None else now
        if self._stop.is_set():
            log.warning("job %s not started: %s is stopping; the next leader runs it",
                        name, self.instance_id)
            self._note_started(name, at, starts, left=True)
            return None
        try:
            held = self.lease.acquire()
        except sa.exc.SQLAlchemyError:
            held = False
        if not held:
            log.warning("job %s not started: %s no longer holds the scheduler lease; the "
                        "leader runs it", name, self.instance_id)
            self._note_started(name, at, starts, left=True)
            threading.Thread(target=self._stop_scheduler, daemon=True).start()
            return None
        with self._idle:
            self._running[name] = at
            self._began[name] = at
        try:
            self._note_started(name, at, starts + 1)
            return self._run(name, at, scheduled=True)
        finally:
            with self._idle:
                self._running.pop(name, None)
                self._idle.notify_all()

    def _note_started(self, name: str, at: float, starts: int, *, left: bool = False) -> None:
        """Note the run ``(name, at)``, begun ``starts`` times: going on here, or
        (``left``) left to the leader unstarted."""
        t = job_runs_started
        try:
            with self.store.engine.begin() as conn:
                conn.execute(t.delete().where(t.c.job == name, t.c.scheduled_at == at))
                conn.execute(t.insert().values(job=name, scheduled_at=at, starts=starts,
                                               runner=self.instance_id,
                                               started_at=self.clock(),
                                               left_at=self.clock() if left else None))
        except sa.exc.SQLAlchemyError as exc:  # the run matters more than its re-run
            log.warning("job %s: could not note its %s (%s); %s", name,
                        "run as left to the leader" if left else "start",
                        str(exc).splitlines()[0], "the run is lost" if left else
                        "if this replica stops before it ends, the run is lost")

    def run_job(self, name: str, now: float | None = None) -> JobResult:
        """Run one job now (by hand: nothing is left for the next leader to run again),
        record the outcome, alert on the first failure and resolve on the next success."""
        return self._run(name, self.clock() if now is None else now, scheduled=False)

    def _run(self, name: str, at: float, *, scheduled: bool) -> JobResult:
        job = self.jobs[name]
        started = time.monotonic()
        try:
            message = job.func(self.ctx, at)
            ok = True
        except Exception as exc:  # a failing job must not stop the daemon
            log.exception("job %s failed", name)
            message = f"{type(exc).__name__}: {exc}"
            ok = False
        duration = time.monotonic() - started
        self.metrics.duration.labels(name).observe(duration)
        self.metrics.runs.labels(name, "ok" if ok else "failed").inc()
        if ok:
            self.metrics.last_success.labels(name).set(self.clock())
            log.info("job %s: %s (%.1fs)", name, message, duration)
        else:
            self.metrics.failures.labels(name).inc()
        before = self._record(name, ok, message, duration, at if scheduled else None)
        try:
            self._alert_on_change(name, ok, before, message)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("job %s: could not store its failure alert (%s)", name, exc)
        return JobResult(name, ok, message, duration)

    def _record(self, name: str, ok: bool, message: str, duration: float,
                scheduled_at: float | None = None) -> int:
        """Update ``job_status`` and, for a scheduled run (``scheduled_at``: its
        ``now``), clear its ``job_runs_started`` row in the same transaction; returns
        the consecutive failures before this run."""
        t = job_status
        now = self.clock()
        with self.store.engine.begin() as conn:
            if scheduled_at is not None:
                r = job_runs_started
                conn.execute(r.delete().where(r.c.job == name, r.c.scheduled_at == scheduled_at))
            row = conn.execute(sa.select(t).where(t.c.job == name)).first()
            before = row.consecutive_failures if row is not None else 0
            values = {
                "runs": (row.runs if row else 0) + 1,
                "failures": (row.failures if row else 0) + (0 if ok else 1),
                "consecutive_failures": 0 if ok else before + 1,
                "last_run_at": now, "last_duration_s": duration, "last_message": message[:4000],
                "last_runner": self.instance_id,
                ("last_success_at" if ok else "last_failure_at"): now,
            }
            if row is None:
                conn.execute(t.insert().values(job=name, **values))
            else:
                conn.execute(t.update().where(t.c.job == name).values(**values))
        return before

    def _alert_on_change(self, name: str, ok: bool, failures_before: int, message: str) -> None:
        subject = {"job": name}
        if not ok and failures_before == 0:
            self.ctx.emit(detector="jobs.failed", kind="version_regression"
                          if name in ("compare", "versions") else "drift", severity="warning",
                          model="inferwatch", model_version="", subject=subject,
                          summary=f"Scheduled job {name} failed: {message[:300]}",
                          evidence={"job": name, "error": message[:1000]}, keep=True)
        elif ok and failures_before > 0:
            self.ctx.emit(detector="jobs.failed", kind="version_regression"
                          if name in ("compare", "versions") else "drift", severity="info",
                          model="inferwatch", model_version="", subject=subject,
                          summary=f"Scheduled job {name} works again after "
                                  f"{failures_before} failed run(s).",
                          evidence={"job": name, "failed_runs": failures_before},
                          status="resolved", keep=True)


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _duration(s: float) -> str:
    return f"{s / 3600:.1f}h" if s >= 3600 else f"{s:.0f}s"


def status_rows(store: Store) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(job_status)
                                                       .order_by(job_status.c.job))]
