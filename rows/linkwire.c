/*  linkwire.c — decoding the messages that arrive on internal links. */
#include "rows/linkwire.h"

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

/* --- metadata_json back to a map ---------------------------------------- */
/* Appends the UTF-8 encoding of cp to *w. */
static void
s_utf8_put (char **w, uint32_t cp)
{
    unsigned char *p = (unsigned char *) *w;
    if (cp < 0x80)
        *p++ = (unsigned char) cp;
    else if (cp < 0x800) {
        *p++ = (unsigned char) (0xC0 | cp >> 6);
        *p++ = (unsigned char) (0x80 | (cp & 0x3F));
    }
    else if (cp < 0x10000) {
        *p++ = (unsigned char) (0xE0 | cp >> 12);
        *p++ = (unsigned char) (0x80 | ((cp >> 6) & 0x3F));
        *p++ = (unsigned char) (0x80 | (cp & 0x3F));
    }
    else {
        *p++ = (unsigned char) (0xF0 | cp >> 18);
        *p++ = (unsigned char) (0x80 | ((cp >> 12) & 0x3F));
        *p++ = (unsigned char) (0x80 | ((cp >> 6) & 0x3F));
        *p++ = (unsigned char) (0x80 | (cp & 0x3F));
    }
    *w = (char *) p;
}

/* Reads 4 hex digits. Returns 0, -1 when one is not hex. */
static int
s_hex4 (const char *p, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t) (c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t) (c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t) (c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

/* Parses the JSON string at *p (at its opening quote) into a heap copy,
   advancing *p past it. NULL when malformed or out of memory. */
static char *
s_json_string (const char **p)
{
    const char *s = *p;
    if (*s != '"')
        return NULL;
    s++;
    /* Unescaping never makes a string longer. */
    const char *end = s;
    while (*end && *end != '"')
        end += (*end == '\\' && end[1]) ? 2 : 1;
    if (*end != '"')
        return NULL;
    char *out = malloc ((size_t) (end - s) + 1);
    if (!out)
        return NULL;
    char *w = out;
    while (s < end) {
        if (*s != '\\') {
            *w++ = *s++;
            continue;
        }
        s++;
        uint32_t cp;
        switch (*s) {
        case '"':
        case '\\':
        case '/':
            *w++ = *s;
            break;
        case 'b':
            *w++ = '\b';
            break;
        case 'f':
            *w++ = '\f';
            break;
        case 'n':
            *w++ = '\n';
            break;
        case 'r':
            *w++ = '\r';
            break;
        case 't':
            *w++ = '\t';
            break;
        case 'u':
            if (end - s < 5 || s_hex4 (s + 1, &cp) != 0)
                goto bad;
            s += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                uint32_t lo;
                if (end - s < 7 || s[1] != '\\' || s[2] != 'u'
                    || s_hex4 (s + 3, &lo) != 0 || lo < 0xDC00 || lo > 0xDFFF)
                    goto bad;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                s += 6;
            }
            else if (cp >= 0xDC00 && cp <= 0xDFFF)
                goto bad;
            if (cp == 0)
                goto bad; /* cannot live in a C string */
            s_utf8_put (&w, cp);
            break;
        default:
            goto bad;
        }
        s++;
    }
    *w = '\0';
    *p = end + 1;
    return out;
bad:
    free (out);
    return NULL;
}

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

/* Fills e's metadata from a flat JSON object of strings. Returns 0, or
   -1 (e's metadata left empty) when json is anything else. */
static int
s_metadata_from_json (Embedflow__V1__Embedding *e, const char *json)
{
    const char *p = json;
#define SKIP_WS()                                                              \
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')                \
    p++
    SKIP_WS ();
    if (!*p)
        return 0;
    if (*p++ != '{')
        return -1;
    size_t cap = 0;
    SKIP_WS ();
    if (*p == '}')
        return 0;
    while (true) {
        SKIP_WS ();
        char *key = s_json_string (&p);
        if (!key)
            goto bad;
        SKIP_WS ();
        char *value = NULL;
        if (*p == ':') {
            p++;
            SKIP_WS ();
            value = s_json_string (&p);
        }
        Embedflow__V1__Embedding__MetadataEntry *entry =
            value ? malloc (sizeof *entry) : NULL;
        if (entry && e->n_metadata == cap) {
            cap = cap ? cap * 2 : 8;
            void *grown = realloc (e->metadata, cap * sizeof *e->metadata);
            if (!grown) {
                free (entry);
                entry = NULL;
            }
            else
                e->metadata = grown;
        }
        if (!entry) {
            free (key);
            free (value);
            goto bad;
        }
        embedflow__v1__embedding__metadata_entry__init (entry);
        entry->key = key;
        entry->value = value;
        e->metadata[e->n_metadata++] = entry;
        SKIP_WS ();
        if (*p == ',') {
            p++;
            continue;
        }
        if (*p++ != '}')
            goto bad;
        SKIP_WS ();
        if (*p)
            goto bad;
        return 0;
    }
#undef SKIP_WS
bad:
    s_entries_free (e);
    return -1;
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
