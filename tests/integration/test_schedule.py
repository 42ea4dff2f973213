"""Scheduled pulls: `embedflow run` with a job of the jobs section on a
cron schedule against the example AI server — repeated firing without overlap,
the misfire policy after downtime, retries of failed runs, one run per
slot across processes, and bad expressions refused at start."""
import datetime
import re
import subprocess

from conftest import DATABASE, EMBEDFLOW_BIN, clean_env
from pullhelp import AiServer, finish, pull, runs

DIM = 16


def schedule(target, cron, *extra):
    return ["--jobs.src.target", target,
            "--jobs.src.source", "src",
            "--jobs.src.schedule", cron, *extra]


def cron_runs(db, schema):
    return [r for r in runs(db, schema) if r["trigger"] == "cron"]


def test_every_second_without_overlap(db, schema, embedflow):
    # each run takes ~1 s (5 chunks, 200 ms apart): slots pass meanwhile
    server = AiServer(1280, DIM, extra=["--delay-ms", "200"])
    try:
        ef = embedflow(dim=DIM, extra=schedule(server.target, "* * * * * *"))
        ef.wait_for_line(r"scheduled '\* \* \* \* \* \*'")
        for n in range(3):
            server.wait_for(lambda e, n=n: e["event"] == "end" and
                            e["call"] == n + 1)
        ef.wait_for_line(r"skipped: the previous run is still going")
        assert ef.stop() == 0, ef.log
        done = [r for r in cron_runs(db, schema)]
        assert len(done) >= 3
        times = db.rows(f'SELECT started_at, finished_at, slot FROM '
                        f'"{schema}".job_run ORDER BY started_at')
        for (s1, f1, _), (s2, _, _) in zip(times, times[1:]):
            assert f1 is not None and s2 >= f1     # never two at once
        slots = [t[2] for t in times]
        assert len(set(slots)) == len(slots)
        assert db.count(schema, "chunk") == 1280
    finally:
        server.stop()


def test_misfire_fire_once_and_skip(db, schema, embedflow):
    server = AiServer(300, DIM)
    try:
        # a first run creates the job's tables and history
        assert finish(pull(schema, server.target)) == 0
        # the process was away for ten minutes of a job due every minute
        away = (datetime.datetime.now(datetime.timezone.utc) -
                datetime.timedelta(minutes=10)).replace(second=0,
                                                        microsecond=0)
        db.rows(f'INSERT INTO "{schema}".job_slot (job, slot) '
                f"VALUES ('src', %s)", (away,))
        started = datetime.datetime.now(datetime.timezone.utc)
        ef = embedflow(dim=DIM, extra=schedule(
            server.target, "* * * * *",
            "--jobs.src.misfire", "fire_once"))
        m = ef.wait_for_line(r"(\d+) slot\(s\) missed: running once now")
        assert int(m.group(1)) >= 9
        ef.wait_for_line(r"run \S+ completed")
        assert ef.stop() == 0, ef.log
        late = [r for r in cron_runs(db, schema)]
        assert len(late) == 1                  # once, not once per slot
        (slot,) = db.rows(f'SELECT slot FROM "{schema}".job_run '
                          f"WHERE trigger = 'cron'")[0]
        assert away < slot <= started

        # skip: the missed slots are not run
        db.rows(f'DELETE FROM "{schema}".job_slot')
        db.rows(f'INSERT INTO "{schema}".job_slot (job, slot) '
                f"VALUES ('src', %s)", (away,))
        # a minute that begins while the skipper runs is a slot of its
        # own, not a missed one: only missed slots (before it started)
        # must not run
        skip_start = datetime.datetime.now(datetime.timezone.utc).replace(
            second=0, microsecond=0)
        skipper = embedflow(dim=DIM, extra=schedule(
            server.target, "* * * * *", "--jobs.src.misfire",
            "skip"))
        skipper.wait_for_line(r"slot\(s\) missed: skipped")
        assert skipper.stop() == 0
        missed = db.rows(f'SELECT count(*) FROM "{schema}".job_run '
                         f"WHERE trigger = 'cron' AND slot <= %s",
                         (skip_start,))[0][0]
        assert missed == 1, cron_runs(db, schema)
    finally:
        server.stop()


def test_failed_run_is_retried_with_backoff(db, schema, embedflow):
    # nothing listens on the target: each run fails at once
    server = AiServer(10, DIM)
    server.stop()
    assert finish(pull(schema, server.target,
                       extra=["--jobs.src.retries", "0"])) == 1
    # a yearly job whose last slot was two years ago: fire_once runs it now
    db.rows(f'INSERT INTO "{schema}".job_slot (job, slot) '
            f"VALUES ('src', now() - interval '2 years')")
    ef = embedflow(dim=DIM, extra=schedule(
        server.target, "@yearly", "--jobs.src.misfire", "fire_once",
        "--jobs.src.retries", "0",
        "--jobs.src.run_retries", "2",
        "--jobs.src.run_retry_base", "50ms",
        "--jobs.src.run_retry_cap", "100ms"))
    ef.wait_for_line(r"retries spent; next try at the next slot")
    assert ef.stop() == 0, ef.log
    failed = cron_runs(db, schema)
    assert [r["status"] for r in failed] == ["failed"] * 3
    assert all("UNAVAILABLE" in r["error"] for r in failed)
    assert len(re.findall(r"the run failed; retry \d of 2", ef.log)) == 2


def test_two_processes_run_each_slot_once(db, schema, embedflow):
    server = AiServer(256, DIM)
    try:
        assert finish(pull(schema, server.target)) == 0   # tables exist
        a = embedflow(dim=DIM, extra=schedule(server.target, "* * * * * *"))
        b = embedflow(dim=DIM, extra=schedule(server.target, "* * * * * *"))
        a.wait_for_line("scheduled")
        b.wait_for_line("scheduled")
        server.wait_for(lambda e: e["event"] == "call" and e["call"] >= 6)
        assert a.stop() == 0 and b.stop() == 0
        slots = [r[0] for r in db.rows(
            f'SELECT slot FROM "{schema}".job_run WHERE trigger = \'cron\'')]
        assert len(slots) >= 5
        assert len(set(slots)) == len(slots)       # no slot ran twice
    finally:
        server.stop()


def test_bad_schedule_is_a_usage_error(schema):
    job = ["--jobs.nightly.target", "127.0.0.1:1"]
    cases = [
        (job + ["--jobs.nightly.schedule", "* 24 * * *"],
         "config jobs.nightly.schedule: field 2 (hour): 24 is out of "
         "range 0-23"),
        (job + ["--jobs.nightly.schedule", "*/5 * * *"],
         "jobs.nightly.schedule: 4 fields"),
        (job + ["--jobs.nightly.schedule", "@often"], "unknown alias"),
        (job + ["--jobs.nightly.schedule", "@hourly",
                "--jobs.nightly.misfire", "sometimes"],
         "jobs.nightly.misfire: 'sometimes' is not skip or fire_once"),
        (job + ["--jobs.nightly.schedule", "@hourly",
                "--jobs.nightly.timezone", "Mars/Olympus"],
         "jobs.nightly.timezone: unknown time zone 'Mars/Olympus'"),
        (["--jobs.nightly.schedule", "@hourly"],
         "jobs.nightly.target: is required"),
        (job + ["--jobs.nightly.schedul", "@hourly"],
         "jobs.nightly.schedul: unknown key"),
        (["--jobs.night/ly.target", "127.0.0.1:1"],
         "a name is 1 to 63 letters"),
    ]
    for extra, want in cases:
        out = subprocess.run(
            [EMBEDFLOW_BIN, "run", "--database", DATABASE, "--schema", schema,
             "--dim", str(DIM), *extra],
            capture_output=True, env=clean_env(), timeout=60)
        assert out.returncode == 2, (extra, out.stderr)
        assert want in out.stderr.decode(), (extra, out.stderr)
