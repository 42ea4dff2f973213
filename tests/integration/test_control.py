"""Control of a running process: `embedflow ctl` against the metrics
endpoint's /control — pause and resume ingest with an upload in flight,
run a pull job now, stop a running one, and who may do it."""
import subprocess
import urllib.error
import urllib.request

from conftest import EMBEDFLOW_BIN, clean_env
from helpers import BackgroundUpload, stream, wait_for_stall, wait_until
from pullhelp import AiServer, runs
from test_jobs import write_config

_METRICS = r"metrics on (http://\S+:(\d+))/metrics"
DIM = 16


def ctl(port, *args, host="127.0.0.1"):
    """Runs `embedflow ctl --metrics HOST:PORT ARGS`; (rc, stdout, stderr)."""
    p = subprocess.run([EMBEDFLOW_BIN, "ctl", "--metrics", f"{host}:{port}",
                        *args], capture_output=True, text=True, timeout=60,
                       env=clean_env())
    return p.returncode, p.stdout, p.stderr


def metrics_port(ef):
    """The endpoint's port, once the pipeline is up (control is on)."""
    port = ef.wait_for_line(_METRICS).group(2)
    ef.wait_for_line(r"embedflow: ready$")
    return port


def test_pause_holds_an_upload_and_resume_finishes_it(embedflow, db, schema):
    ef = embedflow(writers=2, dim=DIM, extra=["--metrics", "127.0.0.1:0"])
    port = metrics_port(ef)
    rc, out, err = ctl(port, "status")
    assert (rc, out) == (0, "ingest: running, 0 upload(s) open\n"), err
    chunks = stream(20000, DIM, 50, doc_prefix="pause")
    # the first 2,000 rows go at once, the rest once the pause is on: on
    # a fast machine the whole upload was read before `ctl pause` ran
    upload = BackgroundUpload(ef.target, chunks, hold_after=40)
    count = lambda: db.count(schema, "chunk")  # noqa: E731
    wait_until("rows arriving", lambda: count() > 0)
    rc, out, err = ctl(port, "pause")
    assert rc == 0, err
    assert out.startswith("paused, 1 upload(s) open"), out
    upload.release()
    # what was read before the pause settles, then nothing more arrives
    # (but the one message the receiver had already asked for)
    held = wait_for_stall(count, quiet=1.5)
    assert 0 < held <= 2000 + 50
    assert wait_for_stall(count, quiet=1.0) == held
    assert ctl(port, "status")[1].startswith("ingest: paused")
    assert upload.thread.is_alive()
    rc, out, err = ctl(port, "resume")
    assert (rc, out) == (0, "running, 1 upload(s) open\n"), err
    upload.finish(db, schema)
    ef.wait_for_line(r"ingest paused")
    ef.wait_for_line(r"ingest resumed")


def test_run_a_job_now_and_stop_it(embedflow, db, schema, tmp_path):
    server = AiServer(100000, DIM, extra=["--delay-ms", "20"])
    try:
        config = write_config(tmp_path, {
            "slow": {"target": server.target, "chunk_size": 64}})
        ef = embedflow(dim=DIM, extra=["--config", config,
                                       "--metrics", "127.0.0.1:0"])
        port = metrics_port(ef)
        rc, out, err = ctl(port, "stop", "slow")
        assert rc == 1 and "job slow is not running" in err, err
        rc, out, err = ctl(port, "run", "slow")
        assert (rc, out) == (0, "job slow: run started\n"), err
        server.wait_for(lambda e: e["event"] == "call")
        wait_until("rows of the run", lambda: db.count(schema, "chunk") > 0)
        rc, out, err = ctl(port, "run", "slow")
        assert rc == 1 and "running already" in err, err
        rc, out, err = ctl(port, "stop", "slow")
        assert rc == 0 and "stopping" in out, err
        ef.wait_for_line(r"job slow run \S+ failed")
        got = runs(db, schema, "slow")
        assert len(got) == 1
        assert got[0]["trigger"] == "manual"
        assert got[0]["status"] == "failed"
        assert got[0]["error"] == "stopped by request"
        # every row forwarded before the stop settled, and no more
        assert got[0]["rows_received"] == got[0]["rows_written"] > 0
        assert got[0]["rows_written"] < 100000
        assert db.count(schema, "chunk") == got[0]["rows_written"]
    finally:
        server.stop()


def test_unknown_command_or_job(embedflow):
    ef = embedflow(dim=DIM, extra=["--metrics", "127.0.0.1:0"])
    port = metrics_port(ef)
    rc, out, err = ctl(port, "explode")
    assert rc == 2 and "explode: unknown command" in err, err
    rc, out, err = ctl(port, "run")
    assert rc == 2 and "run and stop take one job name" in err, err
    rc, out, err = ctl(port, "pause", "now")
    assert rc == 2 and "take no argument" in err, err
    rc, out, err = ctl(port, "run", "nosuch")
    assert rc == 1 and "no job 'nosuch'" in err and "HTTP 404" in err, err
    rc, out, err = ctl(port, "stop", "nosuch")
    assert rc == 1 and "no job 'nosuch'" in err, err
    rc, out, err = ctl("1", "status")  # nothing listens on port 1
    assert rc == 1 and "cannot connect" in err, err
    # GET on a command and POST on status are refused, unknown paths named
    base = f"http://127.0.0.1:{port}"
    for method, path, code in [("GET", "/control/pause", 405),
                               ("POST", "/control/status", 405),
                               ("POST", "/control/jobs//run", 404),
                               ("POST", "/control/reboot", 404)]:
        req = urllib.request.Request(base + path, method=method)
        try:
            urllib.request.urlopen(req, timeout=10)
            raise AssertionError(f"{method} {path} answered 200")
        except urllib.error.HTTPError as e:
            assert e.code == code, (method, path, e.code)


def test_control_off_loopback_needs_the_token(embedflow):
    # bound to every address: not loopback, so control needs the token
    ef = embedflow(dim=DIM, extra=["--metrics", "0.0.0.0:0"])
    port = metrics_port(ef)
    rc, out, err = ctl(port, "status")
    assert rc == 1 and "HTTP 403" in err and "control_token" in err, err
    # metrics stay open
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as r:
        assert r.status == 200
    ef.stop()

    ef = embedflow(dim=DIM, extra=["--metrics", "0.0.0.0:0",
                                   "--control_token", "s3cret"])
    port = metrics_port(ef)
    rc, out, err = ctl(port, "status")
    assert rc == 1 and "HTTP 401" in err, err
    rc, out, err = ctl(port, "--token", "wrong", "status")
    assert rc == 1 and "HTTP 401" in err, err
    rc, out, err = ctl(port, "--token", "s3cret", "status")
    assert (rc, out) == (0, "ingest: running, 0 upload(s) open\n"), err
    p = subprocess.run([EMBEDFLOW_BIN, "ctl", "--metrics", f"127.0.0.1:{port}",
                        "pause"], capture_output=True, text=True, timeout=60,
                       env=clean_env(EMBEDFLOW_CONTROL_TOKEN="s3cret"))
    assert p.returncode == 0 and p.stdout.startswith("paused"), p.stderr
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as r:
        assert b"embedflow_receiver_paused" in r.read()
