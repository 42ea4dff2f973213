"""Several pull jobs in one config file: each on its own schedule and
server, running side by side; schedules read in a job's time zone; and
`embedflow pull --job NAME` running one configured job now."""
import datetime
import re
import signal
import subprocess
import urllib.request

from conftest import DATABASE, EMBEDFLOW_BIN, Embedflow, clean_env
from private_pg import private_pg  # noqa: F401,F811 (fixture)
from pullhelp import WAIT, AiServer, finish, pull, runs

DIM = 16


def write_config(tmp_path, jobs):
    """A config file whose `jobs:` section holds jobs {name: {key: value}}."""
    lines = ["jobs:"]
    for name, keys in jobs.items():
        lines.append(f"  {name}:")
        lines += [f'    {k}: "{v}"' for k, v in keys.items()]
    path = tmp_path / "jobs.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_two_jobs_run_side_by_side(db, schema, embedflow, tmp_path):
    # two servers, each serving its half of one data set (shard filter)
    rows = 2000
    first = AiServer(rows, DIM, extra=["--delay-ms", "40"])
    second = AiServer(rows, DIM, extra=["--delay-ms", "40"])
    try:
        config = write_config(tmp_path, {
            "evens": {"target": first.target, "filter": "shard=0/2",
                      "chunk_size": 64, "schedule": "* * * * * *"},
            "odds": {"target": second.target, "filter": "shard=1/2",
                     "chunk_size": 64, "schedule": "* * * * * *"},
        })
        ef = embedflow(dim=DIM, extra=["--config", config])
        first.wait_for(lambda e: e["event"] == "end")
        second.wait_for(lambda e: e["event"] == "end")
        ef.wait_for_line(r"job evens run \S+ completed")
        ef.wait_for_line(r"job odds run \S+ completed")
        assert ef.stop() == 0, ef.log
        assert db.count(schema, "chunk") == rows
        spans = {}
        for job in ("evens", "odds"):
            got = db.rows(f'SELECT started_at, finished_at FROM '
                          f'"{schema}".job_run '
                          f"WHERE job = %s AND status = 'completed' "
                          f'ORDER BY started_at LIMIT 1', (job,))
            assert got, (job, runs(db, schema, job))
            spans[job] = got[0]
        # the first runs of the two jobs overlapped in time
        (s1, f1), (s2, f2) = spans["evens"], spans["odds"]
        assert s1 < f2 and s2 < f1, spans
        # a job's source defaults to its name, and each call asked for it
        assert {c["source"] for c in first.calls()} == {"evens"}
        assert {c["source"] for c in second.calls()} == {"odds"}
    finally:
        first.stop()
        second.stop()


def test_schedule_in_a_time_zone(db, schema, embedflow, tmp_path):
    server = AiServer(100, DIM)
    try:
        config = write_config(tmp_path, {
            "kolkata": {"target": server.target, "schedule": "@daily",
                        "timezone": "Asia/Kolkata", "misfire": "fire_once"},
        })
        # the job ran last three days ago; fire_once runs the latest slot
        ef = embedflow(dim=DIM, extra=["--config", config])
        ef.wait_for_line(r"job kolkata: scheduled '@daily' \(Asia/Kolkata\)")
        assert ef.stop() == 0, ef.log          # tables exist now
        db.rows(f'INSERT INTO "{schema}".job_slot (job, slot) '
                f"VALUES ('kolkata', now() - interval '3 days')")
        ef = embedflow(dim=DIM, extra=["--config", config])
        ef.wait_for_line(r"slot\(s\) missed: running once now")
        ef.wait_for_line(r"job kolkata run \S+ completed")
        assert ef.stop() == 0, ef.log
        (slot,) = db.rows(f'SELECT slot FROM "{schema}".job_run '
                          f"WHERE job = 'kolkata'")[0]
        # midnight in Kolkata (UTC+05:30) is 18:30 UTC
        utc = slot.astimezone(datetime.timezone.utc)
        assert (utc.hour, utc.minute, utc.second) == (18, 30, 0), utc
        assert db.count(schema, "chunk") == 100
    finally:
        server.stop()


def test_pull_runs_one_configured_job(db, schema, tmp_path):
    server = AiServer(300, DIM)
    try:
        config = write_config(tmp_path, {
            "hourly": {"target": server.target, "schedule": "* * * * * *",
                       "source": "hourly-src"},
            "adhoc": {"target": server.target, "chunk_size": 50},
        })
        ef = Embedflow(["pull", "--database", DATABASE, "--schema", schema,
                        "--dim", str(DIM), "--config", config,
                        "--job", "adhoc"])
        assert finish(ef) == 0, ef.log
        assert [r["status"] for r in runs(db, schema, "adhoc")] == \
            ["completed"]
        assert runs(db, schema, "hourly") == []   # its schedule did not run
        calls = server.calls()
        assert len(calls) == 1 and calls[0]["source"] == "adhoc"
        assert db.count(schema, "chunk") == 300
    finally:
        server.stop()


def test_pull_serves_job_metrics(db, schema):
    rows, bad = 640, 1        # the fault makes every 5th row of chunk 1 bad
    server = AiServer(rows, DIM, extra=["--fault-bad-rows-at", str(bad)])
    try:
        ef = pull(schema, server.target, source="metered",
                  extra=["--chunk-size", "64", "--metrics", "127.0.0.1:0",
                         "--linger"])
        m = ef.wait_for_line(r"serving metrics on port (\d+)", timeout=WAIT)
        with urllib.request.urlopen(
                f"http://127.0.0.1:{m.group(1)}/metrics", timeout=30) as r:
            text = r.read().decode()

        def value(name, **labels):
            want = ",".join(f'{k}="{v}"' for k, v in labels.items())
            found = re.search(rf"^{name}\{{{want}\}} (\S+)$", text, re.M)
            assert found, (name, labels, text[:2000])
            return float(found.group(1))

        dead = 64 // 5 + 1                       # rows 64..127 with n % 5 == 0
        assert value("embedflow_job_rows_received_total",
                     job_name="metered") == rows
        assert value("embedflow_job_rows_dead_lettered_total",
                     job_name="metered") == dead
        assert value("embedflow_job_rows_written_total",
                     job_name="metered") == rows - dead
        assert db.count(schema, "chunk") == rows - dead
        ef.proc.send_signal(signal.SIGTERM)
        assert finish(ef) == 0, ef.log
    finally:
        server.stop()


def test_schedule_survives_a_database_restart(private_pg, tmp_path):
    server = AiServer(64, DIM)
    try:
        config = write_config(tmp_path, {
            "ticker": {"target": server.target, "schedule": "* * * * * *",
                       "retries": 0},
        })
        ef = Embedflow(["run", "--database", private_pg.conninfo,
                        "--schema", "sched", "--listen", "127.0.0.1:0",
                        "--dim", str(DIM), "--config", config]).wait_ready()
        ef.wait_for_line(r"job ticker run \S+ completed")
        private_pg.stop_fast()
        # slots come while the database is away: each is kept, not lost
        ef.wait_for_line(r"job ticker: slot \d+ not claimed \(trying again")
        mark = len(ef.lines)
        private_pg.start_again()
        ef.wait_for_line(r"job ticker run \S+ completed", after=mark,
                         timeout=WAIT)
        assert ef.stop() == 0, ef.log
    finally:
        server.stop()


def test_jobs_schedule_shows_the_next_slots(tmp_path):
    config = write_config(tmp_path, {
        "kolkata": {"target": "127.0.0.1:1", "schedule": "@daily",
                    "timezone": "Asia/Kolkata"},
        "manual": {"target": "127.0.0.1:1"},
    })
    out = subprocess.run([EMBEDFLOW_BIN, "jobs", "--schedule", "--config",
                          config], capture_output=True, text=True,
                         env=clean_env(), timeout=30)
    assert out.returncode == 0, out.stderr
    nexts = re.findall(r"next (\S+ \S+) Asia/Kolkata  \((\S+ \S+) UTC\)",
                       out.stdout)
    assert len(nexts) == 3, out.stdout
    days = set()
    for local, utc in nexts:
        assert local.endswith("00:00:00") and utc.endswith("18:30:00"), nexts
        days.add(local[:10])
    assert len(days) == 3                       # one slot a day
    assert "manual: no schedule" in out.stdout
