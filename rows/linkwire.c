/*  linkwire.c — decoding the messages that arrive on internal links. */
#include "rows/linkwire.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "embedflow/v1/embedding.pb-c.h"

/* Drops the unknown fields of m whose field number is 0. protobuf-c
   takes such a field when its tag is spelt in more bytes than needed
   (0x81 0x00), keeps it, writes it back in one byte when the message is
   packed again, and then refuses to read that: a letter spooled with
   one would be lost at import. No field of ours is numbered 0, so
   nothing is lost by dropping it. */
static void
s_drop_field_zero (ProtobufCMessage *m)
{
    unsigned kept = 0;
    for (unsigned i = 0; i < m->n_unknown_fields; i++) {
        if (m->unknown_fields[i].tag == 0)
            free (m->unknown_fields[i].data);
        else
            m->unknown_fields[kept++] = m->unknown_fields[i];
    }
    m->n_unknown_fields = kept;
    if (kept == 0) {
        free (m->unknown_fields);
        m->unknown_fields = NULL;
    }
}

Embedflow__V1__DeadLetter *
ef_linkwire_dead_letter (const uint8_t *data, size_t len, bool *undecodable)
{
    *undecodable = false;
    Embedflow__V1__DeadLetter *letter =
        embedflow__v1__dead_letter__unpack (NULL, len, data);
    if (letter) {
        s_drop_field_zero (&letter->base);
        return letter;
    }
    *undecodable = true;
    /* Built by packing and unpacking, so that it is freed like any
       other letter. */
    char reason[96];
    snprintf (reason, sizeof reason,
              "a frame of %zu bytes on the dead link is not a DeadLetter", len);
    Embedflow__V1__DeadLetter dl = EMBEDFLOW__V1__DEAD_LETTER__INIT;
    dl.stage = "dlq";
    dl.reason_code = "undecodable";
    dl.reason = reason;
    dl.original.data = (uint8_t *) data;
    dl.original.len = len;
    size_t size = embedflow__v1__dead_letter__get_packed_size (&dl);
    uint8_t *buf = malloc (size);
    if (!buf)
        return NULL;
    embedflow__v1__dead_letter__pack (&dl, buf);
    letter = embedflow__v1__dead_letter__unpack (NULL, size, buf);
    free (buf);
    return letter;
}

Embedflow__V1__Ack *
ef_linkwire_ack (const uint8_t *data, size_t len, char *why, size_t whylen)
{
    Embedflow__V1__Ack *ack = embedflow__v1__ack__unpack (NULL, len, data);
    if (!ack) {
        snprintf (why, whylen, "a frame of %zu bytes is not an Ack", len);
        return NULL;
    }
    s_drop_field_zero (&ack->base);
    for (size_t i = 0; i < ack->n_tallies; i++) {
        Embedflow__V1__StreamTally *t = ack->tallies[i];
        s_drop_field_zero (&t->base);
        if (t->written > INT64_MAX || t->dead_lettered > INT64_MAX
            || t->written + t->dead_lettered > INT64_MAX) {
            snprintf (why, whylen,
                      "an Ack from %.64s settles more rows than a stream "
                      "can hold (stream %llu)",
                      ack->from ? ack->from : "?",
                      (unsigned long long) t->stream_id);
            embedflow__v1__ack__free_unpacked (ack, NULL);
            return NULL;
        }
    }
    return ack;
}

Embedflow__V1__RowBatch *
ef_linkwire_row_batch (const uint8_t *data, size_t len, char *why,
                       size_t whylen)
{
    Embedflow__V1__RowBatch *batch =
        embedflow__v1__row_batch__unpack (NULL, len, data);
    if (!batch)
        snprintf (why, whylen, "a frame of %zu bytes is not a RowBatch", len);
    return batch;
}

/* --- building an Ack ---------------------------------------------------- */

Embedflow__V1__StreamTally *
ef_ack_tally (ef_ack_builder_t *b, uint64_t stream_id, uint64_t chunk_seq,
              uint32_t attempt, ProtobufCBinaryData key)
{
    for (size_t t = 0; t < b->n; t++) {
        Embedflow__V1__StreamTally *x = &b->tallies[t];
        if (x->stream_id == stream_id && x->chunk_seq == chunk_seq
            && x->attempt == attempt && x->stream_key.len == key.len
            && (key.len == 0
                || memcmp (x->stream_key.data, key.data, key.len) == 0))
            return x;
    }
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 8;
        void *grown = realloc (b->tallies, cap * sizeof *b->tallies);
        if (!grown)
            return NULL;
        b->tallies = grown;
        b->cap = cap;
    }
    Embedflow__V1__StreamTally *x = &b->tallies[b->n++];
    embedflow__v1__stream_tally__init (x);
    x->stream_id = stream_id;
    x->chunk_seq = chunk_seq;
    x->attempt = attempt;
    x->stream_key = key;
    return x;
}

zmsg_t *
ef_ack_message (ef_ack_builder_t *b, const char *from)
{
    Embedflow__V1__StreamTally **ptrs =
        malloc ((b->n ? b->n : 1) * sizeof *ptrs);
    zmsg_t *msg = ptrs ? zmsg_new () : NULL;
    zframe_t *frame = NULL;
    if (msg) {
        for (size_t t = 0; t < b->n; t++)
            ptrs[t] = &b->tallies[t];
        Embedflow__V1__Ack ack = EMBEDFLOW__V1__ACK__INIT;
        ack.n_tallies = b->n;
        ack.tallies = ptrs;
        ack.from = (char *) (from ? from : "");
        frame = zframe_new (NULL, embedflow__v1__ack__get_packed_size (&ack));
        if (frame)
            embedflow__v1__ack__pack (&ack, zframe_data (frame));
    }
    if (frame)
        zmsg_append (msg, &frame);
    else
        zmsg_destroy (&msg);
    free (ptrs);
    ef_ack_builder_clear (b);
    return msg;
}

void
ef_ack_builder_clear (ef_ack_builder_t *b)
{
    free (b->tallies);
    *b = (ef_ack_builder_t){0};
}

/* --- metadata_json back to a map ---------------------------------------- */

/* Frees the metadata entries s_metadata_from_json made. */
static void
s_entries_free (Embedflow__V1__Embedding *e)
{
    for (size_t i = 0; i < e->n_metadata; i++) {
        free (e->metadata[i]->key);
        free (e->metadata[i]->value);
        free (e->metadata[i]);
    }
    free (e->metadata);
    e->metadata = NULL;
    e->n_metadata = 0;
}

/* Fills e's metadata from a flat JSON object of strings (jansson reads
   it: no \u0000, UTF-8 only; of a repeated key the last wins, as in a
   protobuf map). Returns 0, or -1 (e's metadata left empty) when json
   is anything else or memory runs out. */
static int
s_metadata_from_json (Embedflow__V1__Embedding *e, const char *json)
{
    if (!json || json[strspn (json, " \t\n\r")] == '\0')
        return 0;
    json_t *root = json_loads (json, 0, NULL);
    if (!json_is_object (root)) {
        json_decref (root);
        return -1;
    }
    size_t n = json_object_size (root);
    e->metadata = n ? calloc (n, sizeof *e->metadata) : NULL;
    int rc = n && !e->metadata ? -1 : 0;
    const char *key;
    json_t *value;
    json_object_foreach (root, key, value)
    {
        Embedflow__V1__Embedding__MetadataEntry *entry = NULL;
        if (rc != 0 || !json_is_string (value)
            || !(entry = malloc (sizeof *entry))) {
            rc = -1;
            break;
        }
        embedflow__v1__embedding__metadata_entry__init (entry);
        e->metadata[e->n_metadata++] = entry;
        entry->key = strdup (key);
        entry->value = strdup (json_string_value (value));
        if (!entry->key || !entry->value)
            rc = -1;
    }
    json_decref (root);
    if (rc != 0)
        s_entries_free (e);
    return rc;
}

/* --- a row's original ---------------------------------------------------- */

uint8_t *
ef_linkwire_row_original (const Embedflow__V1__Row *row, size_t *len,
                          bool *metadata_lost)
{
    Embedflow__V1__Embedding e = EMBEDFLOW__V1__EMBEDDING__INIT;
    char id[37] = "";
    if (row->id.len == 16) {
        const uint8_t *b = row->id.data;
        snprintf (id, sizeof id,
                  "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
                  "%02x%02x%02x%02x%02x%02x",
                  b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9],
                  b[10], b[11], b[12], b[13], b[14], b[15]);
    }
    e.id = id;
    e.document_id = row->document_id;
    e.chunk_index = row->chunk_index;
    e.content = row->content;
    e.n_vector = row->n_vector;
    e.vector = row->vector;
    e.model = row->model;
    *metadata_lost = s_metadata_from_json (&e, row->metadata_json) != 0;
    *len = embedflow__v1__embedding__get_packed_size (&e);
    uint8_t *buf = malloc (*len ? *len : 1);
    if (buf)
        embedflow__v1__embedding__pack (&e, buf);
    s_entries_free (&e);
    return buf;
}
