/*  UUIDv7 layout, monotonicity and text form. */
#include "ef_test.h"

#include "rows/uuid7.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

EF_TEST (uuid7_layout)
{
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    uint64_t before =
        (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
    uint8_t id[16];
    ef_uuid7_generate (id);
    clock_gettime (CLOCK_REALTIME, &ts);
    uint64_t after =
        (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
    EF_CHECK (ef_uuid_version (id) == 7);
    EF_CHECK ((id[8] & 0xc0) == 0x80); /* RFC 9562 variant */
    EF_CHECK (ef_uuid7_millis (id) >= before);
    EF_CHECK (ef_uuid7_millis (id) <= after + 1);
}

EF_TEST (uuid7_monotonic)
{
    uint8_t prev[16], cur[16];
    ef_uuid7_generate (prev);
    for (int i = 0; i < 200000; i++) {
        ef_uuid7_generate (cur);
        EF_REQUIRE (memcmp (prev, cur, 16) < 0);
        EF_REQUIRE (ef_uuid_version (cur) == 7 && (cur[8] & 0xc0) == 0x80);
        memcpy (prev, cur, 16);
    }
}

#define THREADS    4
#define PER_THREAD 20000
static uint8_t s_ids[THREADS][PER_THREAD][16];

static void *
s_mint (void *arg)
{
    uint8_t (*out)[16] = arg;
    for (int i = 0; i < PER_THREAD; i++)
        ef_uuid7_generate (out[i]);
    return NULL;
}

static int
s_cmp (const void *a, const void *b)
{
    return memcmp (a, b, 16);
}

EF_TEST (uuid7_unique_across_threads)
{
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create (&t[i], NULL, s_mint, s_ids[i]);
    for (int i = 0; i < THREADS; i++)
        pthread_join (t[i], NULL);
    for (int i = 0; i < THREADS; i++)
        for (int k = 1; k < PER_THREAD; k++)
            EF_REQUIRE (memcmp (s_ids[i][k - 1], s_ids[i][k], 16) < 0);
    qsort (s_ids, THREADS * PER_THREAD, 16, s_cmp);
    uint8_t *flat = &s_ids[0][0][0];
    for (int k = 1; k < THREADS * PER_THREAD; k++)
        EF_REQUIRE (memcmp (flat + 16 * (k - 1), flat + 16 * k, 16) != 0);
}

EF_TEST (uuid_text)
{
    uint8_t id[16], back[16];
    char text[37];
    ef_uuid7_generate (id);
    ef_uuid_format (id, text);
    EF_CHECK (strlen (text) == 36 && text[14] == '7');
    EF_CHECK (ef_uuid_parse (text, back) == 0 && memcmp (id, back, 16) == 0);
    EF_CHECK (ef_uuid_parse ("{0190F3C1-7A2B-7C3D-8E4F-000000000001}", back)
              == 0);
    EF_CHECK (back[0] == 0x01 && back[15] == 0x01);
    EF_CHECK (ef_uuid_parse ("0190f3c17a2b7c3d8e4f000000000001", back) == 0);
    EF_CHECK (ef_uuid_parse ("not-a-uuid", back) == -1);
    EF_CHECK (ef_uuid_parse ("0190f3c1-7a2b-7c3d-8e4f-00000000000g", back)
              == -1);
    EF_CHECK (ef_uuid_parse ("0190f3c1-7a2b-7c3d-8e4f+000000000001", back)
              == -1);
    EF_CHECK (ef_uuid_parse ("0190f3c1-7a2b-7c3d-8e4f-0000000000011", back)
              == -1);
    EF_CHECK (ef_uuid_parse ("", back) == -1);
    EF_CHECK (ef_uuid_parse (NULL, back) == -1);
}
