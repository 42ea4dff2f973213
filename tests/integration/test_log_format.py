"""--log-format json: every line a demo logs is one JSON object with time,
level, actor and message, and the lines that know an upload's id and its
row counts carry them as fields; text stays as it was; a bad value is
refused."""
import json
import re
import subprocess

from conftest import DATABASE, EMBEDFLOW_BIN, clean_env
from helpers import is_uuid7

ROWS = 3000
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z "
                       r"(ERROR|WARN |INFO |DEBUG) \S+: ")


def _demo(schema, *extra):
    return subprocess.run(
        [EMBEDFLOW_BIN, "demo", "--database", DATABASE, "--schema", schema,
         "--rows", str(ROWS), "--dim", "8", "--chunk-rows", "100", *extra],
        capture_output=True, text=True, env=clean_env(), timeout=300)


def test_demo_json_lines(schema):
    out = _demo(schema, "--log-format", "json", "--verbose")
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) > 5
    records = []
    for line in lines:
        rec = json.loads(line)              # every line parses on its own
        assert isinstance(rec, dict), line
        for key in ("time", "level", "actor", "message"):
            assert key in rec, line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z",
                            rec["time"]), line
        assert rec["level"] in ("error", "warn", "info", "debug"), line
        records.append(rec)
    assert any(r["level"] == "debug" for r in records)

    # The upload's line: its id and counts as fields, not only as text.
    done = [r for r in records if r["actor"] == "grpc-receiver"
            and "job_id" in r and "rows_written" in r]
    assert len(done) == 1, out.stderr
    up = done[0]
    assert is_uuid7(up["job_id"])
    assert up["job_id"] in up["message"]
    assert (up["rows_received"], up["rows_written"],
            up["rows_dead_lettered"]) == (ROWS, ROWS, 0)
    assert up["source"] == "demo" and up["seconds"] >= 0

    # Each writer: named as in the metrics' actor label, its instance
    # number apart, its totals as fields.
    writers = [r for r in records if r["actor"].startswith("db-writer[")
               and "rows_written" in r and "transactions" in r]
    assert sorted(r["instance"] for r in writers) == [0, 1]
    assert all(r["actor"] == "db-writer[%d]" % r["instance"]
               for r in writers)
    assert sum(r["rows_written"] for r in writers) == ROWS
    # The summary stays on stdout, for people.
    assert "rows written     %d" % ROWS in out.stdout


def test_demo_text_lines_as_before(schema):
    out = _demo(schema)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert lines
    for line in lines:
        assert TEXT_LINE.match(line), line
    assert any("upload " in l and f"{ROWS} rows received" in l
               for l in lines), out.stderr


def test_log_format_from_config_file(schema, tmp_path):
    cfg = tmp_path / "embedflow.yaml"
    cfg.write_text("log_format: json\n")
    out = _demo(schema, "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    for line in out.stderr.splitlines():
        assert json.loads(line)["message"], line
    # a flag wins over the file
    out = _demo(schema, "--config", str(cfg), "--log-format", "text")
    assert out.returncode == 0, out.stderr
    assert all(TEXT_LINE.match(l) for l in out.stderr.splitlines())


def test_bad_log_format_is_refused():
    for args in (["--log-format", "xml"], ["--log_format=JSON"]):
        out = subprocess.run([EMBEDFLOW_BIN, "run", *args], text=True,
                             capture_output=True, env=clean_env(),
                             timeout=30)
        assert out.returncode == 2, out
        assert "log_format" in out.stderr and "text or json" in out.stderr
        assert "private PostgreSQL" not in out.stderr   # nothing started
