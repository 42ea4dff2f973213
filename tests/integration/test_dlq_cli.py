"""`embedflow dlq` end to end: rows the database refused are listed,
shown with their row decoded, replayed once the cause is fixed (and then
in the tables, marked replayed), and purged."""
import json
import re
import subprocess

from conftest import DATABASE, EMBEDFLOW_BIN, clean_env
from helpers import chunk, row, send

DIM = 8
POISON = {3, 11, 12}


def dlq(schema, *args, input=None):
    """Runs `embedflow dlq ...` on the test schema; returns the process."""
    return subprocess.run(
        [EMBEDFLOW_BIN, "dlq", *args, "--database", DATABASE,
         "--schema", schema],
        input=input, capture_output=True, text=True, timeout=120,
        env=clean_env())


def test_ls_show_replay_purge(embedflow, db, schema):
    ef = embedflow(writers=1, dim=DIM)
    ef.wait_for_line(r"writing to database")
    db.rows(f'ALTER TABLE "{schema}".chunk ADD CONSTRAINT no_poison '
            f"CHECK (content NOT LIKE 'poison%')")
    items = [row(f"d-{i}", i, DIM,
                 content=("poison " if i in POISON else "ok ") + str(i))
             for i in range(20)]
    r = send(ef.target, [chunk(items, 1)], source="cli-test")
    assert (r.written, r.dead_lettered) == (20 - len(POISON), len(POISON))
    assert ef.stop() == 0

    # ls: a table, and JSON with the same letters.
    p = dlq(schema, "ls")
    assert p.returncode == 0, p.stderr
    for i in POISON:
        assert re.search(rf"write\s+db_rejected \(23514\)\s+d-{i}\b",
                         p.stdout), p.stdout
    assert f"{len(POISON)} dead letters" in p.stdout
    p = dlq(schema, "ls", "--json", "--stage", "write", "--since", "1h")
    assert p.returncode == 0, p.stderr
    letters = json.loads(p.stdout)
    assert sorted(x["document_id"] for x in letters) == \
        sorted(f"d-{i}" for i in POISON)
    assert all(x["sqlstate"] == "23514" and not x["replayed"]
               for x in letters)
    assert json.loads(dlq(schema, "ls", "--json", "--stage",
                          "split").stdout) == []
    assert json.loads(dlq(schema, "ls", "--json", "--since",
                          "2999-01-01").stdout) == []

    # show: every column and the original row decoded.
    first = min(letters, key=lambda x: x["id"])
    doc = first["document_id"]
    i = int(doc.split("-")[1])
    p = dlq(schema, "show", str(first["id"]))
    assert p.returncode == 0, p.stderr
    assert re.search(r"sqlstate\s+23514", p.stdout)
    assert re.search(r"source\s+cli-test", p.stdout)
    assert re.search(rf"document_id: {doc}\b", p.stdout)
    assert re.search(rf"chunk_index: {i}\b", p.stdout)
    assert f"content:     poison {i}" in p.stdout
    assert f"vector:      {DIM} floats" in p.stdout
    p = dlq(schema, "show", "999999")
    assert p.returncode == 1 and "no dead letter 999999" in p.stderr

    # replay before the fix: dead-lettered again, as new letters.
    p = dlq(schema, "replay", str(first["id"]))
    assert p.returncode == 0, p.stderr
    assert "replayed 1 dead letter: 0 written, 1 dead-lettered again" \
        in p.stdout, p.stdout
    assert db.count(schema, "dead_letter") == len(POISON) + 1

    # Fix the cause, dry-run, then replay everything not replayed yet.
    db.rows(f'ALTER TABLE "{schema}".chunk DROP CONSTRAINT no_poison')
    p = dlq(schema, "replay", "--all", "--dry-run")
    assert p.returncode == 0, p.stderr
    assert f"would replay {len(POISON)} dead letters" in p.stdout, p.stdout
    assert db.count(schema, "chunk") == 20 - len(POISON)
    p = dlq(schema, "replay", "--all")
    assert p.returncode == 0, p.stderr
    assert f"replayed {len(POISON)} dead letters: {len(POISON)} written, " \
        "0 dead-lettered again" in p.stdout, p.stdout + p.stderr
    assert db.count(schema, "chunk") == 20
    assert db.count(schema, "embedding") == 20
    rows = db.rows(f'SELECT document_id, source, content FROM "{schema}".chunk '
                   f"WHERE content LIKE 'poison%%' ORDER BY document_id")
    assert rows == sorted((f"d-{i}", "cli-test", f"poison {i}")
                          for i in POISON)
    assert db.scalar(f'SELECT count(*) FROM "{schema}".dead_letter '
                     f'WHERE replayed_at IS NOT NULL') == len(POISON) + 1
    p = dlq(schema, "replay", "--all")
    assert p.returncode == 0 and "no dead letters to replay" in p.stdout, \
        p.stdout

    # purge: refuses without a terminal, then deletes the replayed ones.
    p = dlq(schema, "purge", "--replayed", input="y\n")
    assert p.returncode == 2 and "--yes" in p.stderr, p.stderr
    assert db.count(schema, "dead_letter") == len(POISON) + 1
    p = dlq(schema, "purge", "--replayed", "--before", "2000-01-01", "--yes")
    assert p.returncode == 0 and "no dead letters to purge" in p.stdout
    p = dlq(schema, "purge", "--replayed", "--yes")
    assert p.returncode == 0, p.stderr
    assert f"purged {len(POISON) + 1} dead letters" in p.stdout
    assert db.count(schema, "dead_letter") == 0


def test_dlq_usage_errors(schema, embedflow):
    embedflow(dim=DIM)
    assert dlq(schema, "frobnicate").returncode == 2
    p = dlq(schema, "replay")
    assert p.returncode == 2 and "--all" in p.stderr
    p = dlq(schema, "ls", "12")
    assert p.returncode == 2
    p = dlq(schema, "show")
    assert p.returncode == 2 and "one ID" in p.stderr
    p = dlq(schema, "ls", "--since", "not a time")
    assert p.returncode == 1 and "not a time" in p.stderr, p.stderr
    p = dlq("no_such_schema_here", "ls")
    assert p.returncode == 1 and "dead_letter" in p.stderr, p.stderr
