/*  ef_test.h — the tiny unit-test harness.

    EF_TEST (name) { ... } defines and registers a test; tests/CMakeLists.txt
    finds every EF_TEST in tests/unit/test_*.c and adds one ctest entry per
    test ("unit.name"). Tests whose name starts with db_ get a real
    PostgreSQL: ef_test_conninfo() returns its conninfo, and
    ef_test_schema() a schema name unique to the test. Tests named
    citus_db_* also get the Citus cluster of tests/citus.sh (its
    directory in EF_TEST_CITUS_DIR); without one they print "SKIPPED: "
    and the reason, and ctest shows them as skipped.

    EF_CHECK records a failure and goes on; EF_REQUIRE returns from the
    test. The runner exits nonzero when any check failed.
*/
#ifndef EF_TEST_H
#define EF_TEST_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef void (ef_test_fn) (void);
void ef_test_register (const char *name, ef_test_fn *fn);
void ef_test_fail (const char *file, int line, const char *expr);
const char *ef_test_conninfo (void);
const char *ef_test_schema (void);
extern bool ef_test_verbose;
/* Unix seconds of a UTC date and time (month 1-12). */
int64_t ef_test_utc (int y, int mo, int d, int h, int mi, int s);

#define EF_TEST(name)                                                          \
    static void ef_test_##name (void);                                         \
    __attribute__ ((constructor)) static void ef_test_reg_##name (void)        \
    {                                                                          \
        ef_test_register (#name, ef_test_##name);                              \
    }                                                                          \
    static void ef_test_##name (void)

#define EF_CHECK(cond)                                                         \
    do {                                                                       \
        if (!(cond))                                                           \
            ef_test_fail (__FILE__, __LINE__, #cond);                          \
    } while (0)

#define EF_REQUIRE(cond)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            ef_test_fail (__FILE__, __LINE__, #cond);                          \
            return;                                                            \
        }                                                                      \
    } while (0)

#endif
