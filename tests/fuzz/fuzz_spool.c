/*  fuzz_spool.c — a spool file as the DLQ finds it at start.

    The bytes are the whole file (a crash, a full disk or another program
    may have left anything there). The DLQ opens it (which checks and
    cuts a damaged tail), loads the letters in groups, encodes each group
    for the dead_letter COPY, marks it consumed, and appends to the file
    when the database is away again: all of that runs here. */
#include "fuzz.h"

#include <string.h>
#include <unistd.h>

#include "embedflow/log.h"
#include "postgres/pgwrite.h"
#include "rows/spool.h"

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    ef_log_set_level (EF_LOG_ERROR);
    const char *path = ef_fuzz_file ("spool", data, size);
    char err[1024];
    ef_spool_t *spool = ef_spool_open (path, err, sizeof err);
    if (!spool) {
        unlink (path);
        return 0;
    }
    size_t total = ef_spool_count (spool), seen = 0;
    while (ef_spool_count (spool) > 0) {
        Embedflow__V1__DeadLetter **letters = NULL;
        size_t n = 0, skipped = 0;
        if (ef_spool_load_letters (spool, 3, &letters, &n, &skipped, err,
                                   sizeof err)
            != 0)
            break;
        EF_FUZZ_ASSERT (n + skipped > 0 && n + skipped <= 3);
        size_t len = 0;
        char *copy = ef_pgwrite_copy_dead_letters (letters, n, &len);
        EF_FUZZ_ASSERT (copy != NULL && len >= 21);
        free (copy);
        /* Away again: the group goes back to the spool, as the DLQ
           would append new letters. */
        if (n > 0 && seen == 0) {
            EF_FUZZ_ASSERT (
                ef_spool_append_letters (spool, letters, n, err, sizeof err)
                == 0);
            total += n;
        }
        for (size_t i = 0; i < n; i++)
            embedflow__v1__dead_letter__free_unpacked (letters[i], NULL);
        free (letters);
        seen += n + skipped;
        EF_FUZZ_ASSERT (ef_spool_consume (spool, n + skipped, err, sizeof err)
                        == 0);
    }
    EF_FUZZ_ASSERT (seen == total);
    ef_spool_close (&spool);
    /* What is left must open again, empty. */
    spool = ef_spool_open (path, err, sizeof err);
    EF_FUZZ_ASSERT (spool != NULL);
    EF_FUZZ_ASSERT (ef_spool_count (spool) == 0);
    ef_spool_close (&spool);
    unlink (path);
    return 0;
}
