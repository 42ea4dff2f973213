/*  chunkwire.c — walking EmbeddingChunk bytes without decoding them. */
#include "rows/chunkwire.h"

#include <limits.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "embedflow/v1/embedding.pb-c.h"

/* Field numbers of embedding.proto. */
enum {
    S_CHUNK_ITEMS = 1,
    S_CHUNK_SEQ = 2,
    S_CHUNK_RESUME_TOKEN = 3,
    S_ITEM_ID = 1,
    S_ITEM_DOCUMENT_ID = 2,
    S_ITEM_CHUNK_INDEX = 3,
    S_ITEM_CONTENT = 4,
    S_ITEM_METADATA = 5,
    S_ITEM_VECTOR = 6,
    S_ITEM_MODEL = 7,
    S_ENTRY_KEY = 1,
    S_ENTRY_VALUE = 2,
};

enum { S_VARINT = 0, S_FIXED64 = 1, S_LEN = 2, S_FIXED32 = 5 };

/* One field as it lies in the bytes. */
typedef struct {
    uint32_t number; /* field number */
    int wire;        /* wire type */
    uint64_t value;  /* varint or fixed value */
    ef_span_t body;  /* length-delimited payload (S_LEN) */
    size_t at;       /* offset of its tag */
} s_field_t;

/* protobuf-c reads a tag or a length prefix of at most 5 bytes (an
   overlong spelling of a small one too) and refuses the message
   otherwise; a varint value may take 10. */
#define S_VARINT_SHORT 5
#define S_VARINT_LONG  10

/* Reads a varint of at most max_bytes at *pos. -1 when it runs past end
   or is longer. */
static int
s_varint (const uint8_t *buf, size_t len, size_t *pos, unsigned max_bytes,
          uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned shift = 0, k = 0; k < max_bytes; k++, shift += 7) {
        if (*pos >= len)
            return -1;
        uint8_t b = buf[(*pos)++];
        v |= (uint64_t) (b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

/* Reads the field at *pos. Returns 1 with *f set, 0 at the end, -1 when
   malformed (groups and reserved wire types included: protobuf-c refuses
   them too). */
static int
s_next_field (const uint8_t *buf, size_t len, size_t *pos, s_field_t *f)
{
    if (*pos >= len)
        return 0;
    f->at = *pos;
    uint64_t tag;
    if (s_varint (buf, len, pos, S_VARINT_SHORT, &tag) != 0 || (tag >> 3) == 0
        || (tag >> 3) > UINT32_MAX)
        return -1;
    f->number = (uint32_t) (tag >> 3);
    f->wire = (int) (tag & 7);
    f->body = (ef_span_t){NULL, 0};
    switch (f->wire) {
    case S_VARINT:
        return s_varint (buf, len, pos, S_VARINT_LONG, &f->value) == 0 ? 1 : -1;
    case S_FIXED64:
    case S_FIXED32: {
        size_t n = f->wire == S_FIXED64 ? 8 : 4;
        if (len - *pos < n)
            return -1;
        f->value = 0;
        memcpy (&f->value, buf + *pos, n); /* little-endian hosts only */
        *pos += n;
        return 1;
    }
    case S_LEN: {
        /* protobuf-c also refuses a length over INT_MAX */
        uint64_t n;
        if (s_varint (buf, len, pos, S_VARINT_SHORT, &n) != 0 || n > INT_MAX
            || n > len - *pos)
            return -1;
        f->body = (ef_span_t){buf + *pos, (size_t) n};
        *pos += (size_t) n;
        return 1;
    }
    default:
        return -1;
    }
}

/* Heap protobuf-c keeps for a field it does not know. */
static size_t
s_unknown_cost (const s_field_t *f)
{
    size_t data = f->wire == S_LEN ? f->body.len : f->wire == S_VARINT ? 10 : 8;
    return sizeof (ProtobufCMessageUnknownField) + data;
}

/* Why a walk stopped, for people. */
typedef struct {
    char *why;     /* destination, may be NULL */
    size_t whylen; /* its size */
} s_why_t;

static void
s_say (s_why_t *w, const char *fmt, const char *name, size_t at)
{
    if (w && w->why && w->whylen)
        snprintf (w->why, w->whylen, fmt, name, at);
}

/* Checks one string field's bytes; EF_ROW_BAD_TEXT names it. */
static ef_row_error_t
s_text (const ef_span_t *s, const char *name, s_why_t *w)
{
    size_t bad = ef_text_invalid_at ((const char *) s->data, s->len);
    if (bad == s->len)
        return EF_ROW_OK;
    s_say (w,
           s->data[bad] == 0 ? "%s has a NUL byte at byte %zu"
                             : "%s is not valid UTF-8 at byte %zu",
           name, bad);
    return EF_ROW_BAD_TEXT;
}

/* Walks one metadata entry: key and value must be length-delimited.
   Adds its decoded cost to *cost. With text, checks both strings. */
static ef_row_error_t
s_walk_entry (const ef_span_t *e, bool text, size_t *cost, s_why_t *w,
              int *malformed)
{
    size_t pos = 0;
    s_field_t f;
    int rc;
    *cost += sizeof (void *) + sizeof (Embedflow__V1__Embedding__MetadataEntry);
    while ((rc = s_next_field (e->data, e->len, &pos, &f)) == 1) {
        if (f.number == S_ENTRY_KEY || f.number == S_ENTRY_VALUE) {
            if (f.wire != S_LEN)
                return *malformed = 1, EF_ROW_OK;
            *cost += f.body.len + 1;
            if (text) {
                ef_row_error_t err =
                    s_text (&f.body,
                            f.number == S_ENTRY_KEY ? "a metadata key"
                                                    : "a metadata value",
                            w);
                if (err != EF_ROW_OK)
                    return err;
            }
        }
        else
            *cost += s_unknown_cost (&f);
    }
    if (rc < 0)
        *malformed = 1;
    return EF_ROW_OK;
}

/* Walks one Embedding. Sets *malformed when protobuf-c would refuse it;
   otherwise adds what decoding it costs to *cost and, with text, checks
   every string field (the first bad one is returned). */
static ef_row_error_t
s_walk_item (const ef_span_t *item, bool text, size_t *cost, s_why_t *w,
             int *malformed)
{
    static const char *names[] = {
        [S_ITEM_ID] = "id",
        [S_ITEM_DOCUMENT_ID] = "document_id",
        [S_ITEM_CONTENT] = "content",
        [S_ITEM_MODEL] = "model",
    };
    size_t pos = 0;
    s_field_t f;
    int rc;
    *cost += sizeof (void *) + sizeof (Embedflow__V1__Embedding);
    while ((rc = s_next_field (item->data, item->len, &pos, &f)) == 1) {
        switch (f.number) {
        case S_ITEM_ID:
        case S_ITEM_DOCUMENT_ID:
        case S_ITEM_CONTENT:
        case S_ITEM_MODEL:
            if (f.wire != S_LEN)
                return *malformed = 1, EF_ROW_OK;
            *cost += f.body.len + 1;
            if (text) {
                ef_row_error_t err = s_text (&f.body, names[f.number], w);
                if (err != EF_ROW_OK)
                    return err;
            }
            break;
        case S_ITEM_CHUNK_INDEX:
            if (f.wire != S_VARINT)
                return *malformed = 1, EF_ROW_OK;
            break;
        case S_ITEM_METADATA: {
            if (f.wire != S_LEN)
                return *malformed = 1, EF_ROW_OK;
            ef_row_error_t err =
                s_walk_entry (&f.body, text, cost, w, malformed);
            if (err != EF_ROW_OK || *malformed)
                return err;
            break;
        }
        case S_ITEM_VECTOR:
            /* packed (a run of floats) or one float per field */
            if (f.wire == S_LEN && f.body.len % 4 == 0)
                *cost += f.body.len;
            else if (f.wire == S_FIXED32)
                *cost += 4;
            else
                return *malformed = 1, EF_ROW_OK;
            break;
        default:
            *cost += s_unknown_cost (&f);
        }
    }
    if (rc < 0)
        *malformed = 1;
    return EF_ROW_OK;
}

int
ef_item_view (const uint8_t *item, size_t len, ef_item_view_t *view)
{
    memset (view, 0, sizeof *view);
    uint32_t seen = 0; /* 1 << field number of the fields read */
    size_t pos = 0;
    s_field_t f;
    int rc;
    while ((rc = s_next_field (item, len, &pos, &f)) == 1) {
        /* a repeated singular field is merged (last wins) by protobuf-c,
           repeated vectors are joined: the general decoder's business */
        if (f.number == 0 || f.number > S_ITEM_MODEL
            || (f.number != S_ITEM_METADATA && (seen & 1u << f.number)))
            return 0;
        seen |= 1u << f.number;
        ef_span_t *text = NULL;
        switch (f.number) {
        case S_ITEM_ID:
            text = &view->id;
            break;
        case S_ITEM_DOCUMENT_ID:
            text = &view->document_id;
            break;
        case S_ITEM_CONTENT:
            text = &view->content;
            break;
        case S_ITEM_MODEL:
            text = &view->model;
            break;
        case S_ITEM_CHUNK_INDEX:
            /* protobuf-c keeps the low 32 bits of a longer varint */
            if (f.wire != S_VARINT || pos - f.at > 6 || f.value > UINT32_MAX)
                return 0;
            view->chunk_index = (uint32_t) f.value;
            break;
        case S_ITEM_VECTOR:
            if (f.wire != S_LEN || f.body.len % 4 != 0)
                return 0;
            view->vector = f.body;
            break;
        case S_ITEM_METADATA: {
            if (f.wire != S_LEN || view->n_metadata == EF_ITEM_VIEW_ENTRIES)
                return 0;
            ef_span_t *key = &view->keys[view->n_metadata];
            ef_span_t *value = &view->values[view->n_metadata];
            uint32_t in_entry = 0;
            size_t at = 0;
            s_field_t g;
            int erc;
            while ((erc = s_next_field (f.body.data, f.body.len, &at, &g))
                   == 1) {
                if ((g.number != S_ENTRY_KEY && g.number != S_ENTRY_VALUE)
                    || g.wire != S_LEN || (in_entry & 1u << g.number))
                    return 0;
                in_entry |= 1u << g.number;
                *(g.number == S_ENTRY_KEY ? key : value) = g.body;
            }
            if (erc < 0)
                return 0;
            view->n_metadata++;
            break;
        }
        }
        if (text) {
            if (f.wire != S_LEN)
                return 0;
            *text = f.body;
        }
    }
    return rc == 0 ? 1 : 0;
}

int
ef_chunk_scan (const uint8_t *buf, size_t len, ef_chunk_shape_t *shape,
               char *why, size_t whylen)
{
    memset (shape, 0, sizeof *shape);
    shape->decoded_bytes = sizeof (Embedflow__V1__EmbeddingChunk);
    s_why_t w = {why, whylen};
    size_t pos = 0;
    s_field_t f;
    int rc;
    while ((rc = s_next_field (buf, len, &pos, &f)) == 1) {
        switch (f.number) {
        case S_CHUNK_ITEMS: {
            int malformed = 0;
            if (f.wire == S_LEN)
                s_walk_item (&f.body, false, &shape->decoded_bytes, NULL,
                             &malformed);
            if (f.wire != S_LEN || malformed) {
                char where[64];
                snprintf (where, sizeof where, "item %zu", shape->items);
                s_say (&w, "%s (at byte %zu) is not a valid Embedding", where,
                       f.at);
                return -1;
            }
            shape->items++;
            break;
        }
        case S_CHUNK_SEQ:
            if (f.wire != S_VARINT) {
                s_say (&w, "%s at byte %zu has the wrong wire type", "seq",
                       f.at);
                return -1;
            }
            shape->seq = f.value;
            break;
        case S_CHUNK_RESUME_TOKEN:
            if (f.wire != S_LEN) {
                s_say (&w, "%s at byte %zu has the wrong wire type",
                       "resume_token", f.at);
                return -1;
            }
            shape->resume_token = f.body;
            shape->decoded_bytes += f.body.len + 1;
            break;
        default:
            shape->decoded_bytes += s_unknown_cost (&f);
        }
    }
    if (rc < 0) {
        s_say (&w, "%s at byte %zu is cut short or has a bad tag", "a field",
               pos);
        return -1;
    }
    return 0;
}

int
ef_chunk_next_item (const uint8_t *buf, size_t len, size_t *offset,
                    ef_span_t *item)
{
    s_field_t f;
    int rc;
    while ((rc = s_next_field (buf, len, offset, &f)) == 1)
        if (f.number == S_CHUNK_ITEMS) {
            if (f.wire != S_LEN)
                return -1;
            *item = f.body;
            return 1;
        }
    return rc;
}

ef_row_error_t
ef_item_text_check (const uint8_t *item, size_t len, char *why, size_t whylen)
{
    s_why_t w = {why, whylen};
    size_t cost = 0;
    int malformed = 0;
    ef_span_t span = {item, len};
    return s_walk_item (&span, true, &cost, &w, &malformed);
}

int
ef_wire_find_bytes (const uint8_t *buf, size_t len, uint32_t number,
                    ef_span_t *out)
{
    size_t pos = 0;
    s_field_t f;
    int rc, found = 0;
    while ((rc = s_next_field (buf, len, &pos, &f)) == 1)
        if (f.number == number && f.wire == S_LEN)
            *out = f.body, found = 1;
    return rc < 0 ? -1 : found;
}

void
ef_text_escape (const uint8_t *s, size_t len, char *out, size_t outlen)
{
    size_t o = 0, i = 0;
    bool cut = false;
    while (i < len && !cut) {
        size_t good =
            i + ef_text_invalid_at ((const char *) s + i, len - i); /* end */
        for (; i < good && !cut; i++) {
            unsigned char c = s[i];
            char esc[8];
            size_t n = 1;
            if (c < 0x20 || c == 0x7f)
                n = (size_t) snprintf (esc, sizeof esc, "\\x%02x", c);
            else if (c == '\\')
                esc[0] = '\\', esc[1] = '\\', n = 2;
            else
                esc[0] = (char) c;
            if (o + n + 4 > outlen)
                cut = true;
            else
                memcpy (out + o, esc, n), o += n;
        }
        if (i < len && !cut) {
            /* the byte at i is a NUL or starts invalid UTF-8 */
            if (o + 4 + 4 > outlen)
                cut = true;
            else
                o += (size_t) snprintf (out + o, 5, "\\x%02x", s[i++]);
        }
    }
    if (cut) {
        /* never end inside a multi-byte character */
        size_t keep = o;
        while (keep > 0 && ((unsigned char) out[keep - 1] & 0xc0) == 0x80)
            keep--;
        if (keep > 0 && (unsigned char) out[keep - 1] >= 0xc0)
            o = keep - 1;
        memcpy (out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}
