/*  test_spool.c — the DLQ's local spool: records survive a reopen, a
    torn or damaged tail is cut off, clear empties, one process at a
    time. */
#include "ef_test.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rows/spool.h"

/* A fresh path under TMPDIR. */
static const char *
s_path (const char *name)
{
    static char path[512];
    const char *tmp = getenv ("TMPDIR");
    snprintf (path, sizeof path, "%s/ef-spool-%d-%s", tmp ? tmp : "/tmp",
              (int) getpid (), name);
    unlink (path);
    return path;
}

typedef struct {
    int n;             /* records seen */
    char seen[16][64]; /* their text */
} s_seen_t;

static int
s_collect (void *arg, const uint8_t *data, size_t len)
{
    s_seen_t *s = arg;
    if (s->n < 16)
        snprintf (s->seen[s->n], sizeof s->seen[0], "%.*s", (int) len,
                  (const char *) data);
    s->n++;
    return 0;
}

/* Appends three text records. */
static int
s_append3 (ef_spool_t *sp, const char *a, const char *b, const char *c)
{
    const uint8_t *data[] = {(const uint8_t *) a, (const uint8_t *) b,
                             (const uint8_t *) c};
    size_t len[] = {strlen (a), strlen (b), strlen (c)};
    char err[256];
    return ef_spool_append (sp, data, len, 3, err, sizeof err);
}

static off_t
s_size (const char *path)
{
    struct stat st;
    return stat (path, &st) == 0 ? st.st_size : -1;
}

EF_TEST (spool_survives_reopen)
{
    const char *path = s_path ("reopen");
    char err[256];
    ef_spool_t *sp = ef_spool_open (path, err, sizeof err);
    EF_REQUIRE (sp);
    EF_CHECK (ef_spool_count (sp) == 0);
    EF_CHECK (s_append3 (sp, "one", "", "three") == 0);
    EF_CHECK (ef_spool_count (sp) == 3);
    /* One process at a time. */
    ef_spool_t *other = ef_spool_open (path, err, sizeof err);
    EF_CHECK (!other && strstr (err, "in use"));
    ef_spool_close (&sp);
    EF_CHECK (sp == NULL);
    ef_spool_close (&sp); /* twice is fine */

    sp = ef_spool_open (path, err, sizeof err);
    EF_REQUIRE (sp);
    EF_CHECK (ef_spool_count (sp) == 3);
    EF_CHECK (ef_spool_dropped (sp) == 0);
    s_seen_t seen = {0};
    EF_CHECK (ef_spool_each (sp, s_collect, &seen, err, sizeof err) == 0);
    EF_CHECK (seen.n == 3);
    EF_CHECK (strcmp (seen.seen[0], "one") == 0);
    EF_CHECK (strcmp (seen.seen[1], "") == 0);
    EF_CHECK (strcmp (seen.seen[2], "three") == 0);

    EF_CHECK (ef_spool_clear (sp, err, sizeof err) == 0);
    EF_CHECK (ef_spool_count (sp) == 0);
    EF_CHECK (s_append3 (sp, "a", "b", "c") == 0);
    ef_spool_close (&sp);
    sp = ef_spool_open (path, err, sizeof err);
    EF_REQUIRE (sp);
    EF_CHECK (ef_spool_count (sp) == 3);
    memset (&seen, 0, sizeof seen);
    ef_spool_each (sp, s_collect, &seen, err, sizeof err);
    EF_CHECK (seen.n == 3 && strcmp (seen.seen[0], "a") == 0);
    ef_spool_close (&sp);
    unlink (path);
}

EF_TEST (spool_torn_last_record)
{
    const char *path = s_path ("torn");
    char err[256];
    ef_spool_t *sp = ef_spool_open (path, err, sizeof err);
    EF_REQUIRE (sp);
    EF_CHECK (s_append3 (sp, "first", "second", "third record") == 0);
    ef_spool_close (&sp);
    off_t full = s_size (path);
    /* A crash in the middle of the last append. */
    EF_REQUIRE (truncate (path, full - 5) == 0);
    sp = ef_spool_open (path, err, sizeof err);
    EF_REQUIRE (sp);
    EF_CHECK (ef_spool_count (sp) == 2);
    EF_CHECK (ef_spool_dropped (sp) == 8 + strlen ("third record") - 5);
    /* The torn bytes are gone: the next append starts clean. */
    EF_CHECK (s_size (path) == full - 8 - (off_t) strlen ("third record"));
    EF_CHECK (s_append3 (sp, "x", "y", "z") == 0);
    ef_spool_close (&sp);
    sp = ef_spool_open (path, err, sizeof err);
    EF_REQUIRE (sp);
    s_seen_t seen = {0};
    ef_spool_each (sp, s_collect, &seen, err, sizeof err);
    EF_CHECK (seen.n == 5);
    EF_CHECK (strcmp (seen.seen[1], "second") == 0);
    EF_CHECK (strcmp (seen.seen[2], "x") == 0);
    ef_spool_close (&sp);

    /* Only part of a header written. */
    EF_REQUIRE (truncate (path, s_size (path) + 3) == 0);
    sp = ef_spool_open (path, err, sizeof err);
    EF_REQUIRE (sp);
    EF_CHECK (ef_spool_count (sp) == 5 && ef_spool_dropped (sp) == 3);
    ef_spool_close (&sp);
    unlink (path);
}

EF_TEST (spool_damaged_record)
{
    const char *path = s_path ("damaged");
    char err[256];
    ef_spool_t *sp = ef_spool_open (path, err, sizeof err);
    EF_REQUIRE (sp);
    EF_CHECK (s_append3 (sp, "aaaa", "bbbb", "cccc") == 0);
    ef_spool_close (&sp);
    /* Flip a payload byte of the second record: its checksum fails, and
       nothing after it is trusted. */
    int fd = open (path, O_RDWR);
    EF_REQUIRE (fd >= 0);
    EF_CHECK (pwrite (fd, "X", 1, 16 + 8 + 4 + 8 + 1) == 1);
    close (fd);
    sp = ef_spool_open (path, err, sizeof err);
    EF_REQUIRE (sp);
    EF_CHECK (ef_spool_count (sp) == 1);
    EF_CHECK (ef_spool_dropped (sp) == 2 * (8 + 4));
    ef_spool_close (&sp);

    /* Not a spool at all: refused, left alone. */
    fd = open (path, O_WRONLY | O_TRUNC);
    EF_REQUIRE (fd >= 0);
    EF_CHECK (write (fd, "hello, world", 12) == 12);
    close (fd);
    EF_CHECK (ef_spool_open (path, err, sizeof err) == NULL);
    EF_CHECK (strstr (err, "not an embedflow spool") != NULL);
    EF_CHECK (s_size (path) == 12);
    unlink (path);

    /* A directory that does not exist. */
    EF_CHECK (ef_spool_open ("/nonexistent-dir/x.spool", err, sizeof err)
              == NULL);
    EF_CHECK (strstr (err, "cannot open spool") != NULL);
}

EF_TEST (spool_consume)
{
    const char *path = s_path ("consume");
    char err[256];
    ef_spool_t *sp = ef_spool_open (path, err, sizeof err);
    EF_REQUIRE (sp);
    EF_CHECK (s_append3 (sp, "r1", "r2", "r3") == 0);
    EF_CHECK (s_append3 (sp, "r4", "r5", "r6") == 0);
    EF_CHECK (ef_spool_consume (sp, 2, err, sizeof err) == 0);
    EF_CHECK (ef_spool_count (sp) == 4);
    s_seen_t seen = {0};
    ef_spool_each (sp, s_collect, &seen, err, sizeof err);
    EF_CHECK (seen.n == 4 && strcmp (seen.seen[0], "r3") == 0);
    ef_spool_close (&sp);

    /* What was consumed stays consumed after a reopen (a crash). */
    sp = ef_spool_open (path, err, sizeof err);
    EF_REQUIRE (sp);
    EF_CHECK (ef_spool_count (sp) == 4);
    memset (&seen, 0, sizeof seen);
    ef_spool_each (sp, s_collect, &seen, err, sizeof err);
    EF_CHECK (seen.n == 4 && strcmp (seen.seen[0], "r3") == 0
              && strcmp (seen.seen[3], "r6") == 0);
    EF_CHECK (ef_spool_consume (sp, 3, err, sizeof err) == 0);
    EF_CHECK (ef_spool_count (sp) == 1);
    /* Consuming the rest empties the file down to its header. */
    EF_CHECK (ef_spool_consume (sp, 1, err, sizeof err) == 0);
    EF_CHECK (ef_spool_count (sp) == 0);
    EF_CHECK (s_size (path) == 16);
    ef_spool_close (&sp);

    /* A header pointing past the end is damage, not silence. */
    int fd = open (path, O_WRONLY);
    EF_REQUIRE (fd >= 0);
    EF_CHECK (pwrite (fd, "\xff\x00\x00\x00", 4, 8) == 4);
    close (fd);
    EF_CHECK (ef_spool_open (path, err, sizeof err) == NULL);
    EF_CHECK (strstr (err, "header is damaged") != NULL);
    unlink (path);
}
