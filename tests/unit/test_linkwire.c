/*  test_linkwire.c — decoding what arrives on internal links: dead
    letters are never lost, impossible acks are refused, a row's
    original carries its metadata back. */
#include "ef_test.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "embedflow/v1/embedding.pb-c.h"
#include "rows/linkwire.h"
#include "rows/spool.h"

/* A packed DeadLetter followed by extra bytes, in a heap buffer. */
static uint8_t *
s_letter_bytes (const uint8_t *extra, size_t extra_len, size_t *len)
{
    Embedflow__V1__DeadLetter dl = EMBEDFLOW__V1__DEAD_LETTER__INIT;
    dl.stage = "split";
    dl.reason_code = "bad_dimension";
    dl.document_id = "doc-1";
    dl.stream_id = 7;
    dl.covers = 1;
    size_t n = embedflow__v1__dead_letter__get_packed_size (&dl);
    uint8_t *buf = malloc (n + extra_len);
    embedflow__v1__dead_letter__pack (&dl, buf);
    memcpy (buf + n, extra, extra_len);
    *len = n + extra_len;
    return buf;
}

/* Found by fuzz_dead_letter: field number 0 spelt in two bytes was kept
   by the decoder, packed into the spool in one byte, and the import
   then skipped the record as "not a dead letter". */
EF_TEST (linkwire_letter_with_field_zero_survives_the_spool)
{
    static const uint8_t field_zero[] = {0x80, 0x00, 0x05};
    size_t len;
    uint8_t *bytes = s_letter_bytes (field_zero, sizeof field_zero, &len);
    bool undecodable = true;
    Embedflow__V1__DeadLetter *letter =
        ef_linkwire_dead_letter (bytes, len, &undecodable);
    EF_REQUIRE (letter && !undecodable);
    EF_CHECK (strcmp (letter->document_id, "doc-1") == 0);

    char path[512], err[512];
    const char *tmp = getenv ("TMPDIR");
    snprintf (path, sizeof path, "%s/ef-linkwire-%d.spool", tmp ? tmp : "/tmp",
              (int) getpid ());
    unlink (path);
    ef_spool_t *spool = ef_spool_open (path, err, sizeof err);
    EF_REQUIRE (spool);
    EF_CHECK (ef_spool_append_letters (spool, &letter, 1, err, sizeof err)
              == 0);
    Embedflow__V1__DeadLetter **back = NULL;
    size_t n = 0, skipped = 0;
    EF_CHECK (
        ef_spool_load_letters (spool, 10, &back, &n, &skipped, err, sizeof err)
        == 0);
    EF_CHECK (n == 1 && skipped == 0);
    if (n == 1) {
        EF_CHECK (strcmp (back[0]->document_id, "doc-1") == 0);
        EF_CHECK (back[0]->stream_id == 7 && back[0]->covers == 1);
        embedflow__v1__dead_letter__free_unpacked (back[0], NULL);
    }
    free (back);
    ef_spool_close (&spool);
    unlink (path);
    embedflow__v1__dead_letter__free_unpacked (letter, NULL);
    free (bytes);
}

EF_TEST (linkwire_undecodable_frame_is_kept_whole)
{
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x12, 0x34};
    bool undecodable = false;
    Embedflow__V1__DeadLetter *letter =
        ef_linkwire_dead_letter (junk, sizeof junk, &undecodable);
    EF_REQUIRE (letter);
    EF_CHECK (undecodable);
    EF_CHECK (strcmp (letter->stage, "dlq") == 0
              && strcmp (letter->reason_code, "undecodable") == 0);
    EF_CHECK (letter->original.len == sizeof junk
              && memcmp (letter->original.data, junk, sizeof junk) == 0);
    EF_CHECK (letter->covers == 0);
    embedflow__v1__dead_letter__free_unpacked (letter, NULL);
}

/* Packs an Ack of one tally. */
static uint8_t *
s_ack_bytes (uint64_t written, uint64_t dead, size_t *len)
{
    Embedflow__V1__StreamTally t = EMBEDFLOW__V1__STREAM_TALLY__INIT;
    t.stream_id = 3;
    t.written = written;
    t.dead_lettered = dead;
    Embedflow__V1__StreamTally *tallies[] = {&t};
    Embedflow__V1__Ack ack = EMBEDFLOW__V1__ACK__INIT;
    ack.n_tallies = 1;
    ack.tallies = tallies;
    ack.from = "db-writer.0";
    *len = embedflow__v1__ack__get_packed_size (&ack);
    uint8_t *buf = malloc (*len);
    embedflow__v1__ack__pack (&ack, buf);
    return buf;
}

EF_TEST (linkwire_ack_refuses_impossible_tallies)
{
    char why[256];
    size_t len;
    uint8_t *buf = s_ack_bytes (998, 2, &len);
    Embedflow__V1__Ack *ack = ef_linkwire_ack (buf, len, why, sizeof why);
    EF_CHECK (ack && ack->n_tallies == 1 && ack->tallies[0]->written == 998);
    if (ack)
        embedflow__v1__ack__free_unpacked (ack, NULL);
    free (buf);

    const uint64_t bad[][2] = {{UINT64_MAX, 0},
                               {0, (uint64_t) INT64_MAX + 1},
                               {(uint64_t) INT64_MAX, 1},
                               {UINT64_MAX, 2}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        buf = s_ack_bytes (bad[i][0], bad[i][1], &len);
        why[0] = '\0';
        ack = ef_linkwire_ack (buf, len, why, sizeof why);
        EF_CHECK (ack == NULL);
        EF_CHECK (strstr (why, "stream 3") && strstr (why, "db-writer.0"));
        if (ack)
            embedflow__v1__ack__free_unpacked (ack, NULL);
        free (buf);
    }
    why[0] = '\0';
    EF_CHECK (ef_linkwire_ack ((const uint8_t *) "\xff", 1, why, sizeof why)
              == NULL);
    EF_CHECK (strstr (why, "not an Ack") != NULL);
}

EF_TEST (linkwire_row_original_carries_metadata)
{
    Embedflow__V1__Row row = EMBEDFLOW__V1__ROW__INIT;
    uint8_t id[16] = {0x01, 0x90, 0xa6, 0xb2, 0x7c, 0x1e, 0x7d, 0x2a,
                      0x9f, 0x00, 0x3b, 0x5c, 0x2d, 0x1e, 0x4f, 0x60};
    float v[2] = {1.0f, -2.0f};
    row.id.data = id;
    row.id.len = 16;
    row.document_id = "doc-9";
    row.chunk_index = 4;
    row.n_vector = 2;
    row.vector = v;
    row.metadata_json =
        "{\"lang\": \"en\", \"q\": \"a\\\"b\\u00e9\\ud83d\\ude00\"}";
    bool lost = true;
    size_t len = 0;
    uint8_t *orig = ef_linkwire_row_original (&row, &len, &lost);
    EF_REQUIRE (orig);
    EF_CHECK (!lost);
    Embedflow__V1__Embedding *e =
        embedflow__v1__embedding__unpack (NULL, len, orig);
    EF_REQUIRE (e);
    EF_CHECK (strcmp (e->id, "0190a6b2-7c1e-7d2a-9f00-3b5c2d1e4f60") == 0);
    EF_CHECK (strcmp (e->document_id, "doc-9") == 0 && e->chunk_index == 4);
    EF_CHECK (e->n_vector == 2 && e->vector[1] == -2.0f);
    EF_CHECK (e->n_metadata == 2);
    if (e->n_metadata == 2) {
        EF_CHECK (strcmp (e->metadata[0]->key, "lang") == 0);
        EF_CHECK (strcmp (e->metadata[1]->value, "a\"b\xc3\xa9\xf0\x9f\x98\x80")
                  == 0);
    }
    embedflow__v1__embedding__free_unpacked (e, NULL);
    free (orig);

    /* Not a flat object of strings: said so, the map left empty. */
    const char *bad[] = {"[1]",
                         "{\"a\": 1}",
                         "{\"a\": \"\\u0000\"}",
                         "{\"a\": \"\\ud800\"}",
                         "{\"a\": \"b\"",
                         "{\"a\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        row.metadata_json = (char *) bad[i];
        lost = false;
        orig = ef_linkwire_row_original (&row, &len, &lost);
        EF_CHECK (orig && lost);
        e = orig ? embedflow__v1__embedding__unpack (NULL, len, orig) : NULL;
        EF_CHECK (e && e->n_metadata == 0);
        if (e)
            embedflow__v1__embedding__free_unpacked (e, NULL);
        free (orig);
    }
}

EF_TEST (linkwire_ack_builder)
{
    /* One tally per sending of a chunk: the same stream, chunk, attempt
       and key add up; any of them different is a tally of its own. */
    ef_ack_builder_t b = {0};
    uint8_t k1[] = {1, 2}, k2[] = {1, 3};
    ProtobufCBinaryData key1 = {2, k1}, key2 = {2, k2};
    Embedflow__V1__StreamTally *t = ef_ack_tally (&b, 7, 1, 0, key1);
    EF_REQUIRE (t);
    t->written += 3;
    t = ef_ack_tally (&b, 7, 1, 0, key1);
    EF_REQUIRE (t);
    t->written += 2;
    EF_REQUIRE (ef_ack_tally (&b, 7, 1, 1, key1));
    EF_REQUIRE (ef_ack_tally (&b, 7, 2, 0, key1));
    t = ef_ack_tally (&b, 7, 1, 0, key2);
    EF_REQUIRE (t);
    t->dead_lettered = 4;
    t->ended = "too many bad rows";
    EF_CHECK (b.n == 4);
    zmsg_t *msg = ef_ack_message (&b, "db-writer.0");
    EF_CHECK (b.n == 0 && b.tallies == NULL);
    EF_REQUIRE (msg && zmsg_size (msg) == 1);
    zframe_t *frame = zmsg_first (msg);
    char why[128];
    Embedflow__V1__Ack *ack = ef_linkwire_ack (
        zframe_data (frame), zframe_size (frame), why, sizeof why);
    zmsg_destroy (&msg);
    EF_REQUIRE (ack);
    EF_CHECK (strcmp (ack->from, "db-writer.0") == 0);
    EF_CHECK (ack->n_tallies == 4);
    if (ack->n_tallies == 4) {
        EF_CHECK (ack->tallies[0]->written == 5);
        EF_CHECK (ack->tallies[3]->dead_lettered == 4);
        EF_CHECK (strcmp (ack->tallies[3]->ended, "too many bad rows") == 0);
        EF_CHECK (ack->tallies[3]->stream_key.len == 2
                  && ack->tallies[3]->stream_key.data[1] == 3);
    }
    embedflow__v1__ack__free_unpacked (ack, NULL);
}
