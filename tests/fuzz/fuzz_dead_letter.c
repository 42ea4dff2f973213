/*  fuzz_dead_letter.c — a frame arriving on the dead link.

    The bytes are one frame as the DLQ reads it: decoded (or kept as an
    "undecodable" letter with the frame as its original), encoded for
    the dead_letter COPY, and spooled and read back as when the database
    is away. Nothing on the link may be lost: an undecodable frame's
    bytes must survive as the letter's original. */
#include "fuzz.h"

#include <string.h>
#include <unistd.h>

#include "embedflow/log.h"
#include "rows/linkwire.h"
#include "postgres/pgwrite.h"
#include "rows/spool.h"

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    ef_log_set_level (EF_LOG_ERROR);
    bool undecodable = false;
    Embedflow__V1__DeadLetter *letter =
        ef_linkwire_dead_letter (data, size, &undecodable);
    EF_FUZZ_ASSERT (letter != NULL);
    if (undecodable) {
        EF_FUZZ_ASSERT (strcmp (letter->reason_code, "undecodable") == 0);
        EF_FUZZ_ASSERT (letter->original.len == size);
        EF_FUZZ_ASSERT (size == 0
                        || memcmp (letter->original.data, data, size) == 0);
    }
    size_t len = 0;
    char *copy = ef_pgwrite_copy_dead_letters (&letter, 1, &len);
    EF_FUZZ_ASSERT (copy != NULL && len >= 21);
    free (copy);

    /* The database is away: the letter goes through the spool. */
    const char *path = ef_fuzz_file ("dead-spool", NULL, 0);
    unlink (path);
    char err[1024];
    ef_spool_t *spool = ef_spool_open (path, err, sizeof err);
    EF_FUZZ_ASSERT (spool != NULL);
    EF_FUZZ_ASSERT (ef_spool_append_letters (spool, &letter, 1, err, sizeof err)
                    == 0);
    Embedflow__V1__DeadLetter **back = NULL;
    size_t n = 0, skipped = 0;
    EF_FUZZ_ASSERT (
        ef_spool_load_letters (spool, 10, &back, &n, &skipped, err, sizeof err)
        == 0);
    EF_FUZZ_ASSERT (n == 1 && skipped == 0);
    EF_FUZZ_ASSERT (back[0]->original.len == letter->original.len);
    EF_FUZZ_ASSERT (back[0]->covers == letter->covers
                    && back[0]->stream_id == letter->stream_id);
    embedflow__v1__dead_letter__free_unpacked (back[0], NULL);
    free (back);
    ef_spool_close (&spool);
    unlink (path);
    embedflow__v1__dead_letter__free_unpacked (letter, NULL);
    return 0;
}
