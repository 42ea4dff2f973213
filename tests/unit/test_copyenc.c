/*  test_copyenc.c — the binary COPY encoder's vector formats and half
    floats, on their own (the server's side is tests/integration/
    test_pgvector.py). */
#include "ef_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "postgres/copyenc.h"

/* float from its bits */
static float
s_float (uint32_t bits)
{
    float f;
    memcpy (&f, &bits, 4);
    return f;
}

EF_TEST (copyenc_half_rounding)
{
    EF_CHECK (ef_half_from_float (1.0f) == 0x3C00);
    EF_CHECK (ef_half_from_float (-2.0f) == 0xC000);
    EF_CHECK (ef_half_from_float (0.0f) == 0x0000);
    EF_CHECK (ef_half_from_float (-0.0f) == 0x8000);
    EF_CHECK (ef_half_from_float (0.1f) == 0x2E66);
    EF_CHECK (ef_half_from_float (65504.0f) == 0x7BFF);
    /* halfway between 65504 and 65536 (infinity's place): ties to even,
       which is infinity */
    EF_CHECK (ef_half_from_float (65519.0f) == 0x7BFF);
    EF_CHECK (ef_half_from_float (65520.0f) == 0x7C00);
    EF_CHECK (ef_half_from_float (1e6f) == 0x7C00);
    EF_CHECK (ef_half_from_float (-1e6f) == 0xFC00);
    /* ties to even in the middle of the range: 1 + 2^-11 lies halfway
       between 1 and 1 + 2^-10 */
    EF_CHECK (ef_half_from_float (1.0f + ldexpf (1, -11)) == 0x3C00);
    EF_CHECK (ef_half_from_float (1.0f + 3 * ldexpf (1, -11)) == 0x3C02);
    EF_CHECK (ef_half_from_float (1.0f + ldexpf (1, -11) + ldexpf (1, -20))
              == 0x3C01);
    /* subnormals: 2^-24 is the smallest; 2^-25 is a tie, to even (0) */
    EF_CHECK (ef_half_from_float (ldexpf (1, -24)) == 0x0001);
    EF_CHECK (ef_half_from_float (ldexpf (1, -25)) == 0x0000);
    EF_CHECK (ef_half_from_float (1.5f * ldexpf (1, -25)) == 0x0001);
    EF_CHECK (ef_half_from_float (3 * ldexpf (1, -25)) == 0x0002);
    EF_CHECK (ef_half_from_float (ldexpf (1, -30)) == 0x0000);
    /* the largest subnormal rounds up into the smallest normal */
    EF_CHECK (ef_half_from_float (ldexpf (1, -14) - ldexpf (1, -26)) == 0x0400);
    EF_CHECK (ef_half_from_float (s_float (0x00000001)) == 0x0000);
    EF_CHECK ((ef_half_from_float (NAN) & 0x7C00) == 0x7C00
              && (ef_half_from_float (NAN) & 0x3FF) != 0);

    /* every finite half comes back exactly */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7C00) == 0x7C00)
            continue;
        float f = ef_half_to_float ((uint16_t) h);
        EF_CHECK (isfinite (f));
        if (ef_half_from_float (f) != h) {
            EF_CHECK (ef_half_from_float (f) == h);
            break;
        }
    }
    EF_CHECK (ef_half_to_float (0x7BFF) == 65504.0f);
    EF_CHECK (ef_half_to_float (0x0001) == ldexpf (1, -24));
}

#if defined(__FLT16_MAX__)
/* The compiler's own conversion (round to nearest even, as IEEE 754 and
   the F16C instructions pgvector uses) agrees on random floats. */
EF_TEST (copyenc_half_matches_float16)
{
    uint64_t x = 0x9E3779B97F4A7C15u;
    for (int i = 0; i < 2000000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        float f = s_float ((uint32_t) x);
        /* the interesting range, and every exponent now and then */
        if (i % 4)
            f = ldexpf (s_float (((uint32_t) x & 0x807FFFFFu) | 0x3F800000u),
                        (int) (x >> 40) % 48 - 30);
        if (isnan (f))
            continue;
        _Float16 h = (_Float16) f;
        uint16_t want;
        memcpy (&want, &h, 2);
        if (ef_half_from_float (f) != want) {
            fprintf (stderr, "%a: %04x, _Float16 %04x\n", (double) f,
                     ef_half_from_float (f), want);
            EF_CHECK (ef_half_from_float (f) == want);
            break;
        }
    }
}
#endif

EF_TEST (copyenc_vector_formats)
{
    const float v[2] = {1.0f, -2.0f};
    ef_copybuf_t b = {0};
    /* vector_recv: int16 dim, int16 0, big-endian float4s */
    ef_copybuf_vector (&b, EF_VECTOR_VECTOR, v, 2);
    const unsigned char vec[] = {0,    0,    0, 12, 0,    2, 0, 0,
                                 0x3F, 0x80, 0, 0,  0xC0, 0, 0, 0};
    EF_CHECK (b.len == sizeof vec && memcmp (b.data, vec, sizeof vec) == 0);
    /* halfvec_recv: int16 dim, int16 0, big-endian binary16s */
    b.len = 0;
    ef_copybuf_vector (&b, EF_VECTOR_HALFVEC, v, 2);
    const unsigned char half[] = {0, 0, 0, 8, 0, 2, 0, 0, 0x3C, 0, 0xC0, 0};
    EF_CHECK (b.len == sizeof half && memcmp (b.data, half, sizeof half) == 0);
    /* float4[]: ndim 1, no nulls, oid 700, (2, lower bound 1), items */
    b.len = 0;
    ef_copybuf_vector (&b, EF_VECTOR_REAL, v, 2);
    const unsigned char arr[] = {
        0, 0, 0, 36, 0, 0, 0, 1, 0,    0,    0, 0, 0, 0, 2, 188, 0,    0, 0, 2,
        0, 0, 0, 1,  0, 0, 0, 4, 0x3F, 0x80, 0, 0, 0, 0, 0, 4,   0xC0, 0, 0, 0};
    EF_CHECK (b.len == sizeof arr && memcmp (b.data, arr, sizeof arr) == 0);
    ef_copybuf_free (&b);
    ef_copybuf_free (&b);
    EF_CHECK (b.data == NULL && b.len == 0);
}

EF_TEST (copyenc_vector_check)
{
    float v[3] = {0.5f, 70000.0f, 1.0f};
    char why[128] = "";
    EF_CHECK (ef_vector_check (EF_VECTOR_HALFVEC, v, 3, why, sizeof why) == -1);
    EF_CHECK (strstr (why, "element 1 is 70000") != NULL);
    EF_CHECK (strstr (why, "65504") != NULL);
    EF_CHECK (ef_vector_check (EF_VECTOR_VECTOR, v, 3, why, sizeof why) == 0);
    EF_CHECK (ef_vector_check (EF_VECTOR_REAL, v, 3, why, sizeof why) == 0);
    /* rounds down to 65504: storable */
    v[1] = -65519.0f;
    EF_CHECK (ef_vector_check (EF_VECTOR_HALFVEC, v, 3, why, sizeof why) == 0);

    ef_vector_type_t t;
    EF_CHECK (ef_vector_type_parse ("halfvec", &t) == 0
              && t == EF_VECTOR_HALFVEC);
    EF_CHECK (ef_vector_type_parse ("auto", &t) == 0 && t == EF_VECTOR_AUTO);
    EF_CHECK (ef_vector_type_parse ("float", &t) == -1);
    EF_CHECK (ef_vector_type_parse (NULL, &t) == -1);
    EF_CHECK (strcmp (ef_vector_type_name (EF_VECTOR_REAL), "real") == 0);
}
