/*  Every validation rule, and the canonical metadata JSON. */
#include "ef_test.h"

#include "rows/validate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static float s_vec[4] = {0.1f, 0.2f, 0.3f, 0.4f};
static const ef_row_limits_t s_limits = {4, 100, 60, 20, 8};

static Embedflow__V1__Embedding
s_good (void)
{
    Embedflow__V1__Embedding e = EMBEDFLOW__V1__EMBEDDING__INIT;
    e.document_id = "doc-1";
    e.content = "hello";
    e.model = "m";
    e.n_vector = 4;
    e.vector = s_vec;
    return e;
}

static ef_row_error_t
s_check (const Embedflow__V1__Embedding *e, char *why)
{
    uint8_t id[16];
    bool has_id;
    return ef_row_validate (e, &s_limits, 2, id, &has_id, why, 256);
}

EF_TEST (validate_rules)
{
    char why[256];
    Embedflow__V1__Embedding e = s_good ();
    EF_CHECK (s_check (&e, why) == EF_ROW_OK);

    e = s_good (), e.document_id = "";
    EF_CHECK (s_check (&e, why) == EF_ROW_NO_DOCUMENT_ID);
    EF_CHECK (strstr (why, "document_id") != NULL);

    e = s_good (), e.document_id = "a-document-id-that-is-too-long";
    EF_CHECK (s_check (&e, why) == EF_ROW_DOCUMENT_ID_TOO_LONG);

    e = s_good (), e.n_vector = 0;
    EF_CHECK (s_check (&e, why) == EF_ROW_EMPTY_VECTOR);

    e = s_good (), e.n_vector = 3;
    EF_CHECK (s_check (&e, why) == EF_ROW_WRONG_DIMENSION);
    EF_CHECK (strstr (why, "3") && strstr (why, "4"));

    float nan_vec[4] = {0, NAN, 0, 0}, inf_vec[4] = {0, 0, 0, -INFINITY};
    e = s_good (), e.vector = nan_vec;
    EF_CHECK (s_check (&e, why) == EF_ROW_NOT_FINITE);
    EF_CHECK (strstr (why, "NaN") != NULL);
    e = s_good (), e.vector = inf_vec;
    EF_CHECK (s_check (&e, why) == EF_ROW_NOT_FINITE);

    char big[200];
    memset (big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    e = s_good (), e.content = big;
    EF_CHECK (s_check (&e, why) == EF_ROW_CONTENT_TOO_LARGE);

    uint8_t id[16];
    bool has_id;
    e = s_good ();
    EF_CHECK (ef_row_validate (&e, &s_limits, 61, id, &has_id, why, 256)
              == EF_ROW_METADATA_TOO_LARGE);

    e = s_good (), e.id = "1234";
    EF_CHECK (s_check (&e, why) == EF_ROW_BAD_UUID);
    e = s_good (), e.id = "0190f3c1-7a2b-7c3d-8e4f-000000000001";
    EF_CHECK (ef_row_validate (&e, &s_limits, 2, id, &has_id, why, 256)
              == EF_ROW_OK);
    EF_CHECK (has_id && id[0] == 0x01 && id[15] == 0x01);

    e = s_good (), e.model = "a-model-name-over-8";
    EF_CHECK (s_check (&e, why) == EF_ROW_BAD_TEXT);
    EF_CHECK (strstr (why, "model") != NULL);

    e = s_good (), e.chunk_index = 0x80000000u;
    EF_CHECK (s_check (&e, why) == EF_ROW_CHUNK_INDEX_RANGE);

    EF_CHECK (
        strcmp (ef_row_error_code (EF_ROW_WRONG_DIMENSION), "wrong_dimension")
        == 0);
}

EF_TEST (validate_utf8)
{
    EF_CHECK (ef_text_valid ("plain", 5));
    EF_CHECK (ef_text_valid ("caf\xc3\xa9", 5));
    EF_CHECK (ef_text_valid ("\xf0\x9f\x98\x80", 4)); /* emoji */
    EF_CHECK (!ef_text_valid ("\xc3", 1));            /* truncated */
    EF_CHECK (!ef_text_valid ("\xc0\xaf", 2));        /* overlong */
    EF_CHECK (!ef_text_valid ("\xed\xa0\x80", 3));    /* surrogate */
    EF_CHECK (!ef_text_valid ("a\0b", 3));            /* NUL */
    EF_CHECK (!ef_text_valid ("\xff", 1));
}

EF_TEST (metadata_json_canonical)
{
    Embedflow__V1__Embedding__MetadataEntry a =
        EMBEDFLOW__V1__EMBEDDING__METADATA_ENTRY__INIT;
    Embedflow__V1__Embedding__MetadataEntry b =
        EMBEDFLOW__V1__EMBEDDING__METADATA_ENTRY__INIT;
    Embedflow__V1__Embedding__MetadataEntry c =
        EMBEDFLOW__V1__EMBEDDING__METADATA_ENTRY__INIT;
    a.key = "title", a.value = "say \"hi\"\n";
    b.key = "lang", b.value = "en";
    c.key = "lang", c.value = "fr"; /* repeated key: the last wins */
    Embedflow__V1__Embedding__MetadataEntry *entries[] = {&a, &b, &c};
    size_t len = 0;
    char *json = ef_metadata_json (entries, 3, &len);
    EF_REQUIRE (json);
    EF_CHECK (
        strcmp (json, "{\"lang\":\"fr\",\"title\":\"say \\\"hi\\\"\\u000a\"}")
        == 0);
    EF_CHECK (len == strlen (json));
    free (json);
    json = ef_metadata_json (NULL, 0, &len);
    EF_CHECK (json && strcmp (json, "{}") == 0 && len == 2);
    free (json);
}

/* A vector longer than one block of the finiteness check: every
   position is looked at, and the message names the first bad one. */
EF_TEST (validate_not_finite_at_every_position)
{
    enum { DIM = 37 };
    const ef_row_limits_t limits = {DIM, 100, 60, 20, 8};
    float v[DIM];
    char why[256], want[32];
    uint8_t id[16];
    bool has_id;
    Embedflow__V1__Embedding e = s_good ();
    e.vector = v;
    e.n_vector = DIM;
    for (int bad = -1; bad < DIM; bad++) {
        for (int i = 0; i < DIM; i++)
            v[i] = (float) i / DIM;
        if (bad >= 0)
            v[bad] = bad % 2 ? NAN : -INFINITY;
        ef_row_error_t err =
            ef_row_validate (&e, &limits, 2, id, &has_id, why, sizeof why);
        if (bad < 0) {
            EF_CHECK (err == EF_ROW_OK);
            continue;
        }
        EF_CHECK (err == EF_ROW_NOT_FINITE);
        snprintf (want, sizeof want, "vector[%d] is %s", bad,
                  bad % 2 ? "NaN" : "infinite");
        EF_CHECK (strcmp (why, want) == 0);
    }
}

/* Runs of plain text around every escaped character. */
EF_TEST (metadata_json_escapes_inside_runs)
{
    Embedflow__V1__Embedding__MetadataEntry a =
        EMBEDFLOW__V1__EMBEDDING__METADATA_ENTRY__INIT;
    a.key = "k\\ey", a.value = "\x01"
                               "ab\"cd\x1f"
                               "ef\\";
    Embedflow__V1__Embedding__MetadataEntry *entries[] = {&a};
    size_t len = 0;
    char *json = ef_metadata_json (entries, 1, &len);
    EF_REQUIRE (json);
    EF_CHECK (strcmp (json, "{\"k\\\\ey\":\"\\u0001ab\\\"cd\\u001fef\\\\\"}")
              == 0);
    EF_CHECK (len == strlen (json));
    free (json);
}

/* Text longer than the 8-byte ASCII steps: a NUL, a stray byte or a cut
   sequence is found at every position, a good sequence anywhere
   passes. */
EF_TEST (validate_utf8_at_every_position)
{
    enum { LEN = 41 };
    char text[LEN];
    const char *bad[] = {"\0", "\x80", "\xff", "\xc3"};
    for (size_t b = 0; b < sizeof bad / sizeof *bad; b++)
        for (size_t at = 0; at < LEN; at++) {
            memset (text, 'a', LEN);
            text[at] = bad[b][0];
            EF_CHECK (ef_text_invalid_at (text, LEN) == at);
        }
    for (size_t at = 0; at + 4 <= LEN; at++) {
        memset (text, 'a', LEN);
        memcpy (text + at, "\xf0\x9f\x98\x80", 4);
        EF_CHECK (ef_text_invalid_at (text, LEN) == LEN);
        memset (text, 'a', LEN);
        memcpy (text + at, "\xc3\xa9", 2);
        EF_CHECK (ef_text_invalid_at (text, LEN) == LEN);
    }
}
