/*  seeds.c — writes the fuzz targets' seed corpus.

    ef-fuzz-seeds OUTDIR DEPLOYDIR writes OUTDIR/NAME/SEED for every
    target: messages packed by the project's own protobuf code, spool
    files written by the spool itself, and the example configurations of
    DEPLOYDIR next to a few of its own. scripts/fuzz.sh --seeds runs it
    over tests/fuzz/corpus; the files are checked in, so change this and
    run that to change them. Exits 0, or 1 naming what it could not
    write. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "embedflow/v1/embedding.pb-c.h"
#include "embedflow/v1/pipeline.pb-c.h"
#include "rows/spool.h"

static const char *s_out; /* OUTDIR */

/* Writes data[0..len) to OUTDIR/target/name; exits 1 when it cannot. */
static void
s_write (const char *target, const char *name, const void *data, size_t len)
{
    char path[4096];
    snprintf (path, sizeof path, "%s/%s", s_out, target);
    if (mkdir (path, 0755) != 0 && errno != EEXIST) {
        fprintf (stderr, "ef-fuzz-seeds: cannot create %s: %s\n", path,
                 strerror (errno));
        exit (1);
    }
    snprintf (path, sizeof path, "%s/%s/%s", s_out, target, name);
    FILE *f = fopen (path, "wb");
    if (!f || (len && fwrite (data, 1, len, f) != len) || fclose (f) != 0) {
        fprintf (stderr, "ef-fuzz-seeds: cannot write %s\n", path);
        exit (1);
    }
}

/* Packs any protobuf-c message into target/name. */
static void
s_write_msg (const char *target, const char *name, const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size (msg);
    uint8_t *buf = malloc (len ? len : 1);
    if (!buf)
        exit (1);
    protobuf_c_message_pack (msg, buf);
    s_write (target, name, buf, len);
    free (buf);
}

static float s_vec[4] = {0.25f, -1.5f, 3.0f, 1e-3f};

/* An Embedding as a client uploads it. */
static void
s_embedding (Embedflow__V1__Embedding *e,
             Embedflow__V1__Embedding__MetadataEntry **meta, size_t n_meta,
             const char *doc, uint32_t index)
{
    embedflow__v1__embedding__init (e);
    e->id = "";
    e->document_id = (char *) doc;
    e->chunk_index = index;
    e->content = "Embeddings land in PostgreSQL.";
    e->model = "all-MiniLM-L6-v2";
    e->n_vector = 4;
    e->vector = s_vec;
    e->n_metadata = n_meta;
    e->metadata = meta;
}

static void
s_chunks (void)
{
    Embedflow__V1__Embedding__MetadataEntry m1 =
        EMBEDFLOW__V1__EMBEDDING__METADATA_ENTRY__INIT;
    m1.key = "lang";
    m1.value = "en";
    Embedflow__V1__Embedding__MetadataEntry *meta[] = {&m1};
    Embedflow__V1__Embedding a, b, c;
    s_embedding (&a, meta, 1, "doc-1", 0);
    s_embedding (&b, NULL, 0, "doc-1", 1);
    b.id = "0190a6b2-7c1e-7d2a-9f00-3b5c2d1e4f60";
    s_embedding (&c, NULL, 0, "", 2); /* no document_id */
    Embedflow__V1__Embedding *items[] = {&a, &b, &c};
    Embedflow__V1__EmbeddingChunk chunk = EMBEDFLOW__V1__EMBEDDING_CHUNK__INIT;
    chunk.seq = 1;
    chunk.n_items = 3;
    chunk.items = items;
    s_write_msg ("chunk", "three-items", &chunk.base);
    chunk.n_items = 0;
    chunk.resume_token = "tok-42";
    s_write_msg ("chunk", "empty-with-token", &chunk.base);
    /* A NUL inside a string field, as a hostile client sends it. */
    static const uint8_t nul_doc[] = {0x0a, 0x0a, 0x12, 0x03, 'd',  0x00, 'A',
                                      0x35, 0x00, 0x00, 0x80, 0x3f, 0x10, 0x07};
    s_write ("chunk", "nul-in-document-id", nul_doc, sizeof nul_doc);
    static const uint8_t empty_items[] = {0x0a, 0x00, 0x0a, 0x00, 0x0a, 0x00};
    s_write ("chunk", "empty-items", empty_items, sizeof empty_items);
}

/* A Row as the splitter makes it. */
static void
s_row (Embedflow__V1__Row *r, uint8_t *id, const char *doc, uint32_t index,
       const char *json)
{
    embedflow__v1__row__init (r);
    r->id.data = id;
    r->id.len = 16;
    r->document_id = (char *) doc;
    r->chunk_index = index;
    r->content = "Embeddings land in PostgreSQL.";
    r->metadata_json = (char *) json;
    r->n_vector = 4;
    r->vector = s_vec;
    r->model = "all-MiniLM-L6-v2";
    r->source = "docs";
    r->stream_id = 7;
    r->job_id = "0190a6b2-7c1e-7d2a-9f00-3b5c2d1e4f61";
    r->covers = 1;
    r->received_us = 1700000000000000;
}

static void
s_row_batches (void)
{
    uint8_t id1[16] = {0x01, 0x90, 0xa6, 0xb2, 0x7c, 0x1e, 0x7d, 0x2a,
                       0x9f, 0x00, 0x3b, 0x5c, 0x2d, 0x1e, 0x4f, 0x60};
    uint8_t id2[16] = {0x01, 0x90, 0xa6, 0xb2, 0x7c, 0x1e, 0x7d, 0x2a,
                       0x9f, 0x00, 0x3b, 0x5c, 0x2d, 0x1e, 0x4f, 0x61};
    Embedflow__V1__Row a, b, c;
    s_row (&a, id1, "doc-1", 0, "{\"lang\": \"en\", \"tag\": \"a\\\"b\"}");
    s_row (&b, id2, "doc-1", 1,
           "{\"emoji\":\"\\ud83d\\ude00\",\"esc\":\"\\t\\n\\u00e9\\/\"}");
    s_row (&c, id1, "doc-1", 0, "{}"); /* the same key again */
    c.covers = 2;
    Embedflow__V1__Row *rows[] = {&a, &b, &c};
    Embedflow__V1__RowBatch batch = EMBEDFLOW__V1__ROW_BATCH__INIT;
    batch.batch_id = 1;
    batch.n_rows = 2;
    batch.rows = rows;
    s_write_msg ("row_batch", "two-rows", &batch.base);
    batch.n_rows = 3;
    s_write_msg ("row_batch", "repeated-key", &batch.base);
    /* Pulled rows carry their chunk's checkpoint. */
    a.checkpoint = 1;
    a.reply_to = "grpc-puller";
    a.chunk_seq = 3;
    a.chunk_rows = 2;
    a.resume_token = "tok-3";
    a.metadata_json = "[\"not\", \"a map\"]";
    b.id.len = 15; /* pgwrite refuses it */
    b.n_vector = 3;
    batch.n_rows = 2;
    s_write_msg ("row_batch", "pulled-bad-id-and-metadata", &batch.base);
    batch.n_rows = 0;
    s_write_msg ("row_batch", "empty", &batch.base);
}

static void
s_acks (void)
{
    Embedflow__V1__StreamTally t1 = EMBEDFLOW__V1__STREAM_TALLY__INIT;
    t1.stream_id = 1;
    t1.written = 998;
    t1.dead_lettered = 2;
    Embedflow__V1__StreamTally t2 = EMBEDFLOW__V1__STREAM_TALLY__INIT;
    t2.stream_id = 2;
    t2.written = 500;
    Embedflow__V1__StreamTally *tallies[] = {&t1, &t2};
    Embedflow__V1__Ack ack = EMBEDFLOW__V1__ACK__INIT;
    ack.from = "db-writer.0";
    ack.n_tallies = 1;
    ack.tallies = tallies;
    s_write_msg ("ack", "one-stream", &ack.base);
    ack.n_tallies = 2;
    ack.from = "dlq";
    s_write_msg ("ack", "two-streams", &ack.base);
    t1.written = UINT64_MAX - 1; /* more rows than any stream holds */
    s_write_msg ("ack", "impossible-count", &ack.base);
    ack.n_tallies = 0;
    s_write_msg ("ack", "no-tallies", &ack.base);
}

/* Fills l[0..n) with dead letters of every stage. */
static void
s_letters (Embedflow__V1__DeadLetter *l, size_t n, uint8_t *orig,
           size_t orig_len)
{
    const char *stages[] = {"split", "write", "invalidate", "dlq"};
    const char *codes[] = {"bad_dimension", "db_rejected", "gave_up",
                           "undecodable"};
    for (size_t i = 0; i < n; i++) {
        embedflow__v1__dead_letter__init (&l[i]);
        l[i].stage = (char *) stages[i % 4];
        l[i].reason_code = (char *) codes[i % 4];
        l[i].reason = "vector has 3 dimensions, not 4";
        l[i].attempts = (uint32_t) i;
        l[i].job_id = "0190a6b2-7c1e-7d2a-9f00-3b5c2d1e4f61";
        l[i].source = "docs";
        l[i].document_id = "doc-1";
        l[i].original.data = orig;
        l[i].original.len = orig_len;
        l[i].stream_id = 7;
        l[i].covers = 1;
    }
    l[1].sqlstate = "23505";
    l[1].reason = "duplicate key value violates unique constraint \xff\xfe";
    l[2].covers = 0;
    l[3].checkpoint = 1;
    l[3].reply_to = "grpc-puller";
    l[3].chunk_seq = 3;
    l[3].chunk_rows = 10;
    l[3].resume_token = "tok-3";
}

static void
s_dead_letters (Embedflow__V1__DeadLetter *l, size_t n)
{
    char name[32];
    for (size_t i = 0; i < n; i++) {
        snprintf (name, sizeof name, "%s-%s", l[i].stage, l[i].reason_code);
        s_write_msg ("dead_letter", name, &l[i].base);
    }
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x12, 0x34};
    s_write ("dead_letter", "not-a-letter", junk, sizeof junk);
    /* Field number 0 in a two-byte tag: protobuf-c reads it, but not
       once it is packed again (rows/linkwire.c drops it). */
    size_t len = embedflow__v1__dead_letter__get_packed_size (&l[0]);
    uint8_t *buf = malloc (len + 3);
    if (!buf)
        exit (1);
    embedflow__v1__dead_letter__pack (&l[0], buf);
    memcpy (buf + len, "\x80\x00\x05", 3);
    s_write ("dead_letter", "field-zero-overlong-tag", buf, len + 3);
    free (buf);
}

/* Writes a spool made by the spool code itself as spool/name. */
static void
s_spool_seed (const char *name, Embedflow__V1__DeadLetter *const *letters,
              size_t n, size_t consume, off_t cut)
{
    char path[4096];
    snprintf (path, sizeof path, "%s/.spool-%d", s_out, (int) getpid ());
    unlink (path);
    char err[1024];
    ef_spool_t *sp = ef_spool_open (path, err, sizeof err);
    if (!sp || ef_spool_append_letters (sp, letters, n, err, sizeof err) != 0
        || (consume && ef_spool_consume (sp, consume, err, sizeof err) != 0)) {
        fprintf (stderr, "ef-fuzz-seeds: %s\n", err);
        exit (1);
    }
    if (strcmp (name, "foreign-record") == 0) {
        const uint8_t *rec[] = {(const uint8_t *) "\xff\xff\xff\xff\x0f"};
        size_t len[] = {5};
        if (ef_spool_append (sp, rec, len, 1, err, sizeof err) != 0)
            exit (1);
    }
    ef_spool_close (&sp);
    FILE *f = fopen (path, "rb");
    static uint8_t buf[1 << 16];
    size_t len = f ? fread (buf, 1, sizeof buf, f) : 0;
    if (f)
        fclose (f);
    unlink (path);
    if (cut > 0 && (size_t) cut < len)
        len -= (size_t) cut;
    s_write ("spool", name, buf, len);
}

static void
s_configs (const char *deploy)
{
    const char *files[] = {"embedflow.yaml",      "pull-jobs.yaml",
                           "split/cluster.yaml",  "split/ingest-host.yaml",
                           "split/writer-a.yaml", "split/writer-b.yaml"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char path[4096], name[256];
        snprintf (path, sizeof path, "%s/%s", deploy, files[i]);
        FILE *f = fopen (path, "rb");
        static char buf[1 << 16];
        size_t len = f ? fread (buf, 1, sizeof buf, f) : 0;
        if (!f || ferror (f)) {
            fprintf (stderr, "ef-fuzz-seeds: cannot read %s\n", path);
            exit (1);
        }
        fclose (f);
        snprintf (name, sizeof name, "deploy-%s", files[i]);
        for (char *p = name; *p; p++)
            if (*p == '/')
                *p = '-';
        s_write ("config", name, buf, len);
    }
    static const char flow[] =
        "dim: 4\n"
        "run: [grpc-receiver, splitter]\n"
        "drain_idle: 250ms\n"
        "links: {batches: {endpoint: \"tcp://10.0.0.2:7001\", hwm: 2}}\n"
        "actors: {db-writer: {instances: 3, adaptive: yes}}\n";
    s_write ("config", "flow-style", flow, sizeof flow - 1);
    static const char jobs[] = "jobs:\n"
                               "  a-job:\n"
                               "    target: \"localhost:50061\"\n"
                               "    schedule: \"*/15 9-17 * * MON-FRI\"\n"
                               "    timezone: Europe/Berlin\n"
                               "    filter: \"lang=en,kind=doc\"\n"
                               "  other:\n"
                               "    schedule: \"@hourly\"\n";
    s_write ("config", "jobs-without-target", jobs, sizeof jobs - 1);
    static const char bad[] = "actors:\n  splitter:\n    bach_rows: 3\n";
    s_write ("config", "unknown-key", bad, sizeof bad - 1);
}

int
main (int argc, char **argv)
{
    if (argc != 3) {
        fprintf (stderr, "usage: ef-fuzz-seeds OUTDIR DEPLOYDIR\n");
        return 2;
    }
    s_out = argv[1];
    if (mkdir (s_out, 0755) != 0 && errno != EEXIST) {
        fprintf (stderr, "ef-fuzz-seeds: cannot create %s\n", s_out);
        return 1;
    }
    s_chunks ();
    s_row_batches ();
    s_acks ();

    Embedflow__V1__Embedding e;
    s_embedding (&e, NULL, 0, "doc-1", 0);
    e.n_vector = 3;
    size_t olen = embedflow__v1__embedding__get_packed_size (&e);
    uint8_t orig[256];
    embedflow__v1__embedding__pack (&e, orig);
    Embedflow__V1__DeadLetter letters[4];
    s_letters (letters, 4, orig, olen);
    s_dead_letters (letters, 4);
    Embedflow__V1__DeadLetter *ptrs[] = {&letters[0], &letters[1], &letters[2],
                                         &letters[3]};
    s_spool_seed ("four-letters", ptrs, 4, 0, 0);
    s_spool_seed ("one-consumed", ptrs, 4, 1, 0);
    s_spool_seed ("torn-tail", ptrs, 3, 0, 7);
    s_spool_seed ("foreign-record", ptrs, 1, 0, 0);
    s_spool_seed ("empty", ptrs, 0, 0, 0);
    s_configs (argv[2]);
    return 0;
}
