/*  The process's budget of bytes in flight. */
#include "ef_test.h"

#include "embedflow/budget.h"

EF_TEST (runtime_budget_fits_and_peak)
{
    ef_budget_t *b = ef_budget_process ();
    ef_budget_set_limit (b, 100);
    EF_CHECK (ef_budget_used (b) == 0);
    /* one message larger than the whole budget still gets through alone */
    EF_CHECK (ef_budget_fits (b, 500));
    ef_budget_charge (b, 60);
    EF_CHECK (ef_budget_fits (b, 40));
    EF_CHECK (!ef_budget_fits (b, 41));
    EF_CHECK (!ef_budget_spent (b));
    ef_budget_charge (b, 50);
    EF_CHECK (ef_budget_spent (b));
    ef_budget_release (b, 110);
    EF_CHECK (ef_budget_used (b) == 0 && ef_budget_peak (b) >= 110);
    ef_budget_set_limit (b, 0); /* no limit */
    ef_budget_charge (b, 1000);
    EF_CHECK (ef_budget_fits (b, 1 << 30) && !ef_budget_spent (b));
    ef_budget_release (b, 1000);
}

EF_TEST (runtime_budget_share_gives_all_back)
{
    int64_t charged = 1000;
    /* 3 of 10 rows settle: 300 back; the other 7: the rest */
    EF_CHECK (ef_budget_share (&charged, 10, 3) == 300 && charged == 700);
    EF_CHECK (ef_budget_share (&charged, 7, 7) == 700 && charged == 0);
    charged = 10;
    for (uint64_t left = 3; left > 0; left--)
        ef_budget_share (&charged, left, 1);
    EF_CHECK (charged == 0); /* rounding never leaves bytes behind */
}
