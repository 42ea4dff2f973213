/*  The unsettled chunks of an upload: settling in order, re-sending as a
    new attempt, stale tallies ignored. */
#include "ef_test.h"

#include "rows/inflight.h"

#include <string.h>

EF_TEST (inflight_settles_in_order)
{
    ef_inflight_t *f = ef_inflight_new (false);
    EF_REQUIRE (f);
    EF_CHECK (ef_inflight_add (f, 1, 10, 100, NULL, 5, 0, false) == 0);
    EF_CHECK (ef_inflight_add (f, 2, 5, 50, NULL, 6, 0, false) == 0);
    ef_settle_t s;
    /* the second chunk settles first: nothing is released until the
       first is settled too */
    ef_inflight_settle (f, 2, 0, 5, 0, &s);
    EF_CHECK (s.written == 5 && s.released == 0);
    ef_inflight_settle (f, 1, 0, 7, 2, &s);
    EF_CHECK (s.written == 7 && s.dead == 2 && s.released == 0);
    ef_inflight_settle (f, 1, 0, 1, 0, &s);
    EF_CHECK (s.released == 150 && ef_inflight_empty (f));
    EF_CHECK (ef_inflight_charged (f) == 0);
    /* without kept bytes nothing can be sent again */
    EF_CHECK (ef_inflight_add (f, 3, 1, 1, NULL, 7, 0, false) == 0);
    EF_CHECK (ef_inflight_restart (f, &s) == 0);
    ef_inflight_destroy (&f);
    EF_CHECK (f == NULL);
}

EF_TEST (inflight_resend_is_a_new_attempt)
{
    ef_inflight_t *f = ef_inflight_new (true);
    EF_REQUIRE (f);
    zframe_t *a = zframe_new ("aaaa", 4), *b = zframe_new ("bb", 2);
    EF_CHECK (ef_inflight_add (f, 1, 4, 40, a, 10, 0, false) == 0);
    EF_CHECK (ef_inflight_add (f, 2, 2, 20, b, 11, 0, false) == 0);
    zframe_destroy (&a);
    zframe_destroy (&b);
    ef_settle_t s;
    ef_inflight_settle (f, 1, 0, 3, 0, &s); /* 3 of 4, then a peer goes */
    ef_inflight_settle (f, 2, 0, 2, 0, &s); /* all of the second */
    EF_CHECK (ef_inflight_restart (f, &s) == 2);
    EF_CHECK (s.written == 5); /* taken back: counted again */
    /* a late tally of the first attempt counts nothing */
    ef_inflight_settle (f, 1, 0, 1, 0, &s);
    EF_CHECK (s.written == 0 && s.released == 0);
    uint64_t seq;
    uint32_t attempt, rows;
    zframe_t *body;
    EF_CHECK (ef_inflight_next_due (f, &seq, &attempt, &rows, &body, 20, 1)
              == 1);
    EF_CHECK (seq == 1 && attempt == 1 && rows == 4 && body
              && zframe_size (body) == 4
              && memcmp (zframe_data (body), "aaaa", 4) == 0);
    zframe_destroy (&body);
    EF_CHECK (ef_inflight_next_due (f, &seq, &attempt, &rows, &body, 21, 1)
              == 1);
    EF_CHECK (seq == 2 && attempt == 1);
    zframe_destroy (&body);
    EF_CHECK (ef_inflight_next_due (f, &seq, &attempt, &rows, &body, 22, 1)
              == 0);
    int64_t sent;
    uint64_t churn;
    EF_CHECK (ef_inflight_oldest (f, &sent, &churn) && sent == 20
              && churn == 1);
    ef_inflight_settle (f, 2, 1, 2, 0, &s);
    ef_inflight_settle (f, 1, 1, 4, 0, &s);
    EF_CHECK (s.released == 60 && ef_inflight_empty (f));
    ef_inflight_destroy (&f);
}

EF_TEST (inflight_many_chunks_slide)
{
    ef_inflight_t *f = ef_inflight_new (false);
    EF_REQUIRE (f);
    ef_settle_t s;
    int64_t released = 0;
    for (uint64_t seq = 0; seq < 1000; seq++) {
        EF_CHECK (ef_inflight_add (f, seq, 1, 1, NULL, 0, 0, false) == 0);
        if (seq >= 3) {
            ef_inflight_settle (f, seq - 3, 0, 1, 0, &s);
            released += s.released;
        }
    }
    EF_CHECK (released == 997 && ef_inflight_charged (f) == 3);
    ef_inflight_destroy (&f);
}
