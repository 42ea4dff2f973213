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
