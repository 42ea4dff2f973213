/*  The growable buffer every builder appends into. */
#include "ef_test.h"

#include "embedflow/buf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

EF_TEST (buf_appends)
{
    ef_buf_t b = {0};
    size_t len = 99;
    char *empty = ef_buf_take (&b, &len);
    EF_REQUIRE (empty);
    EF_CHECK (len == 0 && empty[0] == '\0');
    free (empty);

    EF_CHECK (ef_buf_puts (&b, "a") == 0);
    EF_CHECK (ef_buf_put (&b, "\0b", 2) == 0); /* bytes, NUL included */
    EF_CHECK (b.len == 3 && b.data[3] == '\0');
    /* printf past the capacity: formatted again after growing */
    char big[1000];
    memset (big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    EF_CHECK (ef_buf_printf (&b, "[%s]%d", big, 42) == 0);
    EF_CHECK (b.len == 3 + 1 + 999 + 1 + 2);
    EF_CHECK (memcmp (b.data + b.len - 3, "]42", 3) == 0);
    EF_CHECK (b.data[b.len] == '\0');
    for (int i = 0; i < 10000; i++)
        ef_buf_put (&b, "0123456789", 10);
    EF_CHECK (b.len == 1006 + 100000 && b.cap > b.len);
    char *text = ef_buf_take (&b, &len);
    EF_REQUIRE (text);
    EF_CHECK (len == 101006 && text[3] == '[' && text[len] == '\0');
    EF_CHECK (b.data == NULL && b.len == 0 && !b.failed);
    free (text);
}

EF_TEST (buf_reserve_grows_to_need)
{
    /* Room for n more bytes is at most twice what is needed, however
       often a buffer of that size is asked for again. */
    for (int round = 0; round < 64; round++) {
        ef_buf_t b = {0};
        EF_REQUIRE (ef_buf_reserve (&b, 65536) == 0);
        EF_CHECK (b.cap > 65536 && b.cap <= 2 * 65537);
        ef_buf_free (&b);
    }
}

EF_TEST (buf_failure_is_sticky)
{
    ef_buf_t b = {0};
    EF_CHECK (ef_buf_puts (&b, "kept") == 0);
    EF_CHECK (ef_buf_reserve (&b, SIZE_MAX - 2) == -1);
    EF_CHECK (b.failed);
    EF_CHECK (ef_buf_puts (&b, "lost") == -1);
    EF_CHECK (ef_buf_printf (&b, "%d", 1) == -1);
    size_t len = 7;
    EF_CHECK (ef_buf_take (&b, &len) == NULL);
    EF_CHECK (len == 7 && b.data == NULL && !b.failed);
    ef_buf_free (&b);
}
