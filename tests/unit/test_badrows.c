/*  The limit on bad rows per upload: count and share, reasons named. */
#include "ef_test.h"

#include "rows/badrows.h"

#include <string.h>

EF_TEST (badrows_limit_needs_count_and_share)
{
    ef_badrows_t *t = ef_badrows_new (10, 50);
    EF_REQUIRE (t);
    /* 100 good rows, then bad ones: 11 bad of 111 is over the count but
       under the share */
    for (int i = 0; i < 100; i++)
        EF_CHECK (!ef_badrows_count (t, 1, NULL, 0));
    for (int i = 0; i < 11; i++)
        EF_CHECK (!ef_badrows_count (t, 1, "wrong_dimension", 0));
    EF_CHECK (!ef_badrows_ended (t, 1));
    /* a stream that is all bad ends at the 11th */
    for (int i = 0; i < 10; i++)
        EF_CHECK (!ef_badrows_count (t, 2, "bad_text", 0));
    EF_CHECK (ef_badrows_count (t, 2, "not_finite", 0));
    EF_CHECK (ef_badrows_ended (t, 2));
    /* ended stays ended, good rows included */
    EF_CHECK (ef_badrows_count (t, 2, NULL, 0));
    char why[256];
    ef_badrows_describe (t, 2, why, sizeof why);
    EF_CHECK (strstr (why, "11 of 11 rows were bad") != NULL);
    EF_CHECK (strstr (why, "bad_text 10, not_finite 1") != NULL);
    /* the other stream is not touched */
    EF_CHECK (!ef_badrows_ended (t, 1));
    ef_badrows_destroy (&t);
    EF_CHECK (t == NULL);
}

EF_TEST (badrows_no_limit_and_forget)
{
    ef_badrows_t *t = ef_badrows_new (0, 50);
    EF_REQUIRE (t);
    for (int i = 0; i < 10000; i++)
        EF_CHECK (!ef_badrows_count (t, 7, "bad_text", 5));
    EF_CHECK (!ef_badrows_count (t, 8, NULL, 100));
    EF_CHECK (ef_badrows_size (t) == 2);
    ef_badrows_forget (t, 50);
    EF_CHECK (ef_badrows_size (t) == 1);
    ef_badrows_destroy (&t);
}

EF_TEST (badrows_many_reasons)
{
    ef_badrows_t *t = ef_badrows_new (100, 0);
    EF_REQUIRE (t);
    const char *codes[] = {"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"};
    for (int i = 0; i < 10; i++)
        ef_badrows_count (t, 3, codes[i], 0);
    char why[512];
    ef_badrows_describe (t, 3, why, sizeof why);
    EF_CHECK (strstr (why, "other 2") != NULL);
    ef_badrows_destroy (&t);
}
