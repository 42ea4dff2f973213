/*  EmbeddingChunk bytes walked without decoding: shape, items, text
    checked to the wire length, and agreement with protobuf-c's unpack. */
#include "ef_test.h"

#include "embedflow/v1/embedding.pb-c.h"
#include "rows/chunkwire.h"

#include <stdlib.h>
#include <string.h>

/* A growing byte buffer for hand-made messages. */
typedef struct {
    uint8_t data[4096]; /* bytes */
    size_t len;         /* used */
} s_msg_t;

static void
s_varint (s_msg_t *m, uint64_t v)
{
    do {
        uint8_t b = v & 0x7f;
        v >>= 7;
        m->data[m->len++] = (uint8_t) (b | (v ? 0x80 : 0));
    } while (v);
}

/* Appends a length-delimited field. */
static void
s_bytes (s_msg_t *m, uint32_t field, const void *data, size_t len)
{
    s_varint (m, (uint64_t) field << 3 | 2);
    s_varint (m, len);
    memcpy (m->data + m->len, data, len);
    m->len += len;
}

/* An Embedding with the given text fields (lengths explicit: NULs
   allowed) and a 2-float vector. */
static s_msg_t
s_item (const char *doc, size_t doc_len, const char *content,
        size_t content_len)
{
    s_msg_t m = {.len = 0};
    s_bytes (&m, 2, doc, doc_len);
    s_varint (&m, 3 << 3 | 0);
    s_varint (&m, 7);
    s_bytes (&m, 4, content, content_len);
    float v[2] = {0.5f, 1.5f};
    s_bytes (&m, 6, v, sizeof v);
    return m;
}

EF_TEST (chunkwire_scan_matches_protobuf)
{
    float v[3] = {1, 2, 3};
    Embedflow__V1__Embedding e = EMBEDFLOW__V1__EMBEDDING__INIT;
    e.document_id = "doc";
    e.content = "hello";
    e.n_vector = 3;
    e.vector = v;
    Embedflow__V1__Embedding *items[] = {&e, &e, &e};
    Embedflow__V1__EmbeddingChunk c = EMBEDFLOW__V1__EMBEDDING_CHUNK__INIT;
    c.n_items = 3;
    c.items = items;
    c.seq = 42;
    c.resume_token = "tok";
    uint8_t buf[512];
    size_t len = embedflow__v1__embedding_chunk__pack (&c, buf);

    ef_chunk_shape_t shape;
    char why[256] = "";
    EF_REQUIRE (ef_chunk_scan (buf, len, &shape, why, sizeof why) == 0);
    EF_CHECK (shape.items == 3 && shape.seq == 42);
    EF_CHECK (shape.resume_token.len == 3
              && memcmp (shape.resume_token.data, "tok", 3) == 0);
    EF_CHECK (shape.decoded_bytes
              >= 3 * (sizeof (Embedflow__V1__Embedding) + 12 + 4 + 6));

    size_t offset = 0, n = 0;
    ef_span_t item;
    while (ef_chunk_next_item (buf, len, &offset, &item) == 1) {
        Embedflow__V1__Embedding *d =
            embedflow__v1__embedding__unpack (NULL, item.len, item.data);
        EF_CHECK (d && strcmp (d->document_id, "doc") == 0 && d->n_vector == 3);
        EF_CHECK (ef_item_text_check (item.data, item.len, why, sizeof why)
                  == EF_ROW_OK);
        embedflow__v1__embedding__free_unpacked (d, NULL);
        n++;
    }
    EF_CHECK (n == 3);
}

EF_TEST (chunkwire_empty_items_cost)
{
    /* 1000 empty items ("0a 00"): 2 kB on the wire, far more decoded */
    static uint8_t buf[2000];
    for (size_t i = 0; i < sizeof buf; i += 2)
        buf[i] = 0x0a, buf[i + 1] = 0;
    ef_chunk_shape_t shape;
    EF_REQUIRE (ef_chunk_scan (buf, sizeof buf, &shape, NULL, 0) == 0);
    EF_CHECK (shape.items == 1000);
    EF_CHECK (shape.decoded_bytes >= 1000 * sizeof (Embedflow__V1__Embedding));
    Embedflow__V1__EmbeddingChunk *c =
        embedflow__v1__embedding_chunk__unpack (NULL, sizeof buf, buf);
    EF_CHECK (c && c->n_items == 1000);
    embedflow__v1__embedding_chunk__free_unpacked (c, NULL);
}

EF_TEST (chunkwire_malformed)
{
    char why[256];
    ef_chunk_shape_t shape;
    /* an item whose document_id is a varint */
    const uint8_t wrong_type[] = {0x0a, 0x02, 0x10, 0x01};
    EF_CHECK (
        ef_chunk_scan (wrong_type, sizeof wrong_type, &shape, why, sizeof why)
        == -1);
    EF_CHECK (strstr (why, "item 0") != NULL);
    /* a length past the end */
    const uint8_t past_end[] = {0x0a, 0x05, 0x12, 0x01};
    EF_CHECK (ef_chunk_scan (past_end, sizeof past_end, &shape, why, sizeof why)
              == -1);
    /* a group (wire type 3) */
    const uint8_t group[] = {0x0b, 0x0c};
    EF_CHECK (ef_chunk_scan (group, sizeof group, &shape, why, sizeof why)
              == -1);
    /* a vector of 5 bytes: not whole floats */
    const uint8_t odd_vector[] = {0x0a, 0x07, 0x32, 0x05, 1, 2, 3, 4, 5};
    EF_CHECK (
        ef_chunk_scan (odd_vector, sizeof odd_vector, &shape, why, sizeof why)
        == -1);
    /* a varint of 11 bytes */
    uint8_t long_varint[13] = {0x10};
    memset (long_varint + 1, 0xff, 11);
    long_varint[12] = 0x01;
    EF_CHECK (
        ef_chunk_scan (long_varint, sizeof long_varint, &shape, why, sizeof why)
        == -1);
    /* unknown fields are skipped, as protobuf does */
    const uint8_t unknown[] = {0x78, 0x05, 0x0a, 0x02, 0x78, 0x01};
    EF_CHECK (ef_chunk_scan (unknown, sizeof unknown, &shape, why, sizeof why)
              == 0);
    EF_CHECK (shape.items == 1);
}

EF_TEST (chunkwire_text_to_full_length)
{
    char why[256];
    s_msg_t m = s_item ("d\0A", 3, "ok", 2);
    EF_CHECK (ef_item_text_check (m.data, m.len, why, sizeof why)
              == EF_ROW_BAD_TEXT);
    EF_CHECK (strstr (why, "document_id has a NUL byte at byte 1") != NULL);

    m = s_item ("doc", 3, "tail\0", 5);
    EF_CHECK (ef_item_text_check (m.data, m.len, why, sizeof why)
              == EF_ROW_BAD_TEXT);
    EF_CHECK (strstr (why, "content") != NULL);

    m = s_item ("doc", 3, "bad \xc3\x28", 6);
    EF_CHECK (ef_item_text_check (m.data, m.len, why, sizeof why)
              == EF_ROW_BAD_TEXT);
    EF_CHECK (strstr (why, "content is not valid UTF-8 at byte 4") != NULL);

    /* model, id and metadata values are checked the same way */
    m = s_item ("doc", 3, "ok", 2);
    s_bytes (&m, 7, "m\0x", 3);
    EF_CHECK (ef_item_text_check (m.data, m.len, why, sizeof why)
              == EF_ROW_BAD_TEXT);
    EF_CHECK (strstr (why, "model") != NULL);
    m = s_item ("doc", 3, "ok", 2);
    s_bytes (&m, 1, "\0", 1);
    EF_CHECK (ef_item_text_check (m.data, m.len, why, sizeof why)
              == EF_ROW_BAD_TEXT);
    s_msg_t entry = {.len = 0};
    s_bytes (&entry, 1, "k", 1);
    s_bytes (&entry, 2, "v\0v", 3);
    m = s_item ("doc", 3, "ok", 2);
    s_bytes (&m, 5, entry.data, entry.len);
    EF_CHECK (ef_item_text_check (m.data, m.len, why, sizeof why)
              == EF_ROW_BAD_TEXT);
    EF_CHECK (strstr (why, "metadata value") != NULL);

    /* multi-byte text is fine */
    m = s_item ("caf\xc3\xa9", 5, "\xf0\x9f\x98\x80", 4);
    EF_CHECK (ef_item_text_check (m.data, m.len, why, sizeof why) == EF_ROW_OK);

    /* the last document_id given is the one protobuf keeps */
    ef_span_t doc;
    s_bytes (&m, 2, "second", 6);
    EF_CHECK (ef_wire_find_bytes (m.data, m.len, 2, &doc) == 1);
    EF_CHECK (doc.len == 6 && memcmp (doc.data, "second", 6) == 0);
}

EF_TEST (chunkwire_text_escape)
{
    char out[64];
    ef_text_escape ((const uint8_t *) "victim\0attacker", 15, out, sizeof out);
    EF_CHECK (strcmp (out, "victim\\x00attacker") == 0);
    ef_text_escape ((const uint8_t *) "a\\b\xff\n", 5, out, sizeof out);
    EF_CHECK (strcmp (out, "a\\\\b\\xff\\x0a") == 0);
    /* cut with "...", never inside a multi-byte character */
    char small[10];
    ef_text_escape ((const uint8_t *) "ab\xc3\xa9\xc3\xa9\xc3\xa9xyz", 11,
                    small, sizeof small);
    EF_CHECK (strlen (small) < sizeof small);
    EF_CHECK (strstr (small, "...") != NULL);
    EF_CHECK (ef_text_valid (small, strlen (small)));
}

/* The walk must accept what protobuf-c's unpack accepts, or the receiver
   refuses good messages (and vice versa a row reaches a decode that
   fails). Checked on many mutations of a valid chunk. */
EF_TEST (chunkwire_agrees_with_unpack)
{
    s_msg_t item = s_item ("document", 8, "some content", 12);
    s_msg_t entry = {.len = 0};
    s_bytes (&entry, 1, "lang", 4);
    s_bytes (&entry, 2, "en", 2);
    s_bytes (&item, 5, entry.data, entry.len);
    s_bytes (&item, 7, "model", 5);
    s_msg_t chunk = {.len = 0};
    s_bytes (&chunk, 1, item.data, item.len);
    s_bytes (&chunk, 1, item.data, item.len);
    s_varint (&chunk, 2 << 3);
    s_varint (&chunk, 9);
    s_bytes (&chunk, 3, "resume", 6);

    srand (7);
    int disagreements = 0, accepted = 0;
    for (int round = 0; round < 20000; round++) {
        uint8_t buf[sizeof chunk.data];
        size_t len = chunk.len;
        memcpy (buf, chunk.data, len);
        int flips = 1 + rand () % 3;
        for (int k = 0; k < flips; k++)
            buf[rand () % len] = (uint8_t) rand ();
        if (rand () % 4 == 0)
            len = (size_t) rand () % len;
        ef_chunk_shape_t shape;
        int scanned = ef_chunk_scan (buf, len, &shape, NULL, 0);
        Embedflow__V1__EmbeddingChunk *c =
            embedflow__v1__embedding_chunk__unpack (NULL, len, buf);
        if ((scanned == 0) != (c != NULL)) {
            if (disagreements++ < 3)
                fprintf (stderr, "round %d: scan %d, unpack %s\n", round,
                         scanned, c ? "ok" : "failed");
        }
        else if (c) {
            EF_CHECK (shape.items == c->n_items && shape.seq == c->seq);
            accepted++;
        }
        if (c)
            embedflow__v1__embedding_chunk__free_unpacked (c, NULL);
    }
    EF_CHECK (disagreements == 0);
    /* both outcomes were exercised */
    EF_CHECK (accepted > 1000 && accepted < 19000);
}

/* Found by fuzz_chunk: a tag spelt in 6 bytes (an unknown field) passed
   the scan, while protobuf-c refuses the message. */
EF_TEST (chunkwire_long_tag_refused_like_protobuf)
{
    static const uint8_t msg[] = {0xb5, 0xff, 0xf5, 0xf5, 0xfd,
                                  0x00, 0x0a, 0x00, 0x0a, 0x00};
    Embedflow__V1__EmbeddingChunk *c =
        embedflow__v1__embedding_chunk__unpack (NULL, sizeof msg, msg);
    EF_CHECK (c == NULL);
    if (c)
        embedflow__v1__embedding_chunk__free_unpacked (c, NULL);
    ef_chunk_shape_t shape;
    char why[160] = "";
    EF_CHECK (ef_chunk_scan (msg, sizeof msg, &shape, why, sizeof why) == -1);
    EF_CHECK (why[0] != '\0');
    /* The same field with a 5-byte tag is an unknown field both skip. */
    static const uint8_t ok[] = {0xb0, 0xff, 0xf5, 0xf5, 0x0d,
                                 0x00, 0x0a, 0x00, 0x0a, 0x00};
    c = embedflow__v1__embedding_chunk__unpack (NULL, sizeof ok, ok);
    EF_CHECK (c && c->n_items == 2);
    if (c)
        embedflow__v1__embedding_chunk__free_unpacked (c, NULL);
    EF_CHECK (ef_chunk_scan (ok, sizeof ok, &shape, why, sizeof why) == 0
              && shape.items == 2);
}

/* Found by fuzz_chunk: an item's length spelt in 8 bytes (an overlong
   zero) passed the scan, while protobuf-c reads a length of at most 5
   bytes and refuses the message. */
EF_TEST (chunkwire_long_length_refused_like_protobuf)
{
    static const uint8_t msg[] = {0x0a, 0x80, 0x80, 0x80, 0x80, 0x80,
                                  0x80, 0x80, 0x00, 0x0a, 0x00};
    static const uint8_t five[] = {0x0a, 0x80, 0x80, 0x80,
                                   0x80, 0x00, 0x0a, 0x00};
    static const uint8_t huge[] = {0x0a, 0x80, 0x80, 0x80, 0x80, 0x08};
    struct {
        const uint8_t *data;
        size_t len;
        int items; /* -1: refused */
    } cases[] = {
        {msg, sizeof msg, -1}, {five, sizeof five, 2}, {huge, sizeof huge, -1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Embedflow__V1__EmbeddingChunk *c =
            embedflow__v1__embedding_chunk__unpack (NULL, cases[i].len,
                                                    cases[i].data);
        EF_CHECK ((c != NULL) == (cases[i].items >= 0));
        EF_CHECK (!c || (int) c->n_items == cases[i].items);
        if (c)
            embedflow__v1__embedding_chunk__free_unpacked (c, NULL);
        ef_chunk_shape_t shape;
        char why[160] = "";
        int rc = ef_chunk_scan (cases[i].data, cases[i].len, &shape, why,
                                sizeof why);
        EF_CHECK (rc == (cases[i].items >= 0 ? 0 : -1));
        EF_CHECK (rc != 0 || (int) shape.items == cases[i].items);
        EF_CHECK (rc == 0 || why[0] != '\0');
    }
}

/* True when span holds the same bytes as protobuf-c's string s (absent
   is ""). */
static bool
s_same_text (ef_span_t span, const char *s)
{
    if (!s)
        s = "";
    /* a NUL inside is kept by both: compare the span's bytes */
    return memcmp (s, span.data ? (const char *) span.data : "", span.len) == 0
           && s[span.len] == 0;
}

/* A view must give exactly what protobuf-c's unpack gives, for every
   form it accepts; mutations of a full item (id, metadata, a longer
   vector) exercise both the common form and the ones it leaves to
   protobuf-c. */
EF_TEST (chunkwire_item_view_agrees_with_unpack)
{
    s_msg_t item = s_item ("document", 8, "some content", 12);
    s_bytes (&item, 1, "0190b3a0-0000-7000-8000-000000000001", 36);
    for (int k = 0; k < 3; k++) {
        s_msg_t entry = {.len = 0};
        s_bytes (&entry, 1, k == 1 ? "title" : "lang", k == 1 ? 5 : 4);
        s_bytes (&entry, 2, k == 2 ? "fr" : "en", 2);
        s_bytes (&item, 5, entry.data, entry.len);
    }
    s_bytes (&item, 7, "model", 5);

    srand (11);
    int viewed = 0, declined = 0, wrong = 0;
    for (int round = 0; round < 20000; round++) {
        uint8_t buf[sizeof item.data];
        size_t len = item.len;
        memcpy (buf, item.data, len);
        int flips = round == 0 ? 0 : 1 + rand () % 3;
        for (int k = 0; k < flips; k++)
            buf[rand () % len] = (uint8_t) rand ();
        if (round && rand () % 5 == 0)
            len = (size_t) rand () % len;
        ef_item_view_t view;
        if (ef_item_view (buf, len, &view) != 1) {
            declined++;
            continue;
        }
        viewed++;
        Embedflow__V1__Embedding *e =
            embedflow__v1__embedding__unpack (NULL, len, buf);
        bool same =
            e && s_same_text (view.id, e->id)
            && s_same_text (view.document_id, e->document_id)
            && s_same_text (view.content, e->content)
            && s_same_text (view.model, e->model)
            && view.chunk_index == e->chunk_index
            && view.vector.len / 4 == e->n_vector
            && (e->n_vector == 0
                || memcmp (view.vector.data, e->vector, view.vector.len) == 0)
            && view.n_metadata == e->n_metadata;
        for (size_t k = 0; same && k < e->n_metadata; k++)
            same = s_same_text (view.keys[k], e->metadata[k]->key)
                   && s_same_text (view.values[k], e->metadata[k]->value);
        if (!same && wrong++ < 3)
            fprintf (stderr, "round %d: the view differs from unpack (%s)\n",
                     round, e ? "decoded" : "unpack failed");
        if (e)
            embedflow__v1__embedding__free_unpacked (e, NULL);
    }
    EF_CHECK (wrong == 0);
    /* the unmutated item and many mutations are read as views; the
       others are left to protobuf-c */
    EF_CHECK (viewed > 2000 && declined > 2000);
}

/* Forms the view leaves to protobuf-c, which merges or joins them. */
EF_TEST (chunkwire_item_view_declines_merged_forms)
{
    ef_item_view_t view;
    s_msg_t m = s_item ("doc", 3, "text", 4);
    EF_CHECK (ef_item_view (m.data, m.len, &view) == 1);
    EF_CHECK (view.document_id.len == 3 && view.chunk_index == 7
              && view.vector.len == 8 && view.n_metadata == 0);
    s_msg_t twice = m;
    s_bytes (&twice, 2, "other", 5); /* document_id again: last wins */
    EF_CHECK (ef_item_view (twice.data, twice.len, &view) == 0);
    s_msg_t joined = m;
    float more = 2.5f;
    s_bytes (&joined, 6, &more, 4); /* a second vector run: joined */
    EF_CHECK (ef_item_view (joined.data, joined.len, &view) == 0);
    s_msg_t unknown = m;
    s_bytes (&unknown, 9, "x", 1); /* a field this version does not know */
    EF_CHECK (ef_item_view (unknown.data, unknown.len, &view) == 0);
    s_msg_t single = m;
    s_varint (&single, 6 << 3 | 5); /* one unpacked float */
    memcpy (single.data + single.len, &more, 4);
    single.len += 4;
    EF_CHECK (ef_item_view (single.data, single.len, &view) == 0);
}
