/*  replay.c — runs files through a fuzz target without libFuzzer.

    ef-fuzz-NAME FILE|DIR...: every file (every regular file of a
    directory) goes through LLVMFuzzerTestOneInput once. Exits 0 when
    all ran, 1 when one could not be read; a broken promise aborts. This
    is how ctest replays the corpus in builds without libFuzzer, and how
    an AFL-style fuzzer can drive a target (one file per run). */
#include "fuzz.h"

#include <dirent.h>
#include <string.h>
#include <sys/stat.h>

/* Feeds the file at path to the target. Returns 0, -1 when unreadable. */
static int
s_run_file (const char *path)
{
    FILE *f = fopen (path, "rb");
    if (!f) {
        fprintf (stderr, "cannot read %s\n", path);
        return -1;
    }
    uint8_t *data = NULL;
    size_t len = 0, cap = 0;
    while (!feof (f) && !ferror (f)) {
        if (len == cap) {
            cap = cap ? cap * 2 : 4096;
            uint8_t *grown = realloc (data, cap);
            if (!grown)
                break;
            data = grown;
        }
        len += fread (data + len, 1, cap - len, f);
    }
    int bad = ferror (f) || !feof (f);
    fclose (f);
    if (bad) {
        free (data);
        fprintf (stderr, "cannot read %s\n", path);
        return -1;
    }
    /* A copy of exactly len bytes, so that ASan sees any over-read. */
    uint8_t *exact = malloc (len ? len : 1);
    if (!exact) {
        free (data);
        return -1;
    }
    if (len)
        memcpy (exact, data, len);
    free (data);
    LLVMFuzzerTestOneInput (exact, len);
    free (exact);
    return 0;
}

int
main (int argc, char **argv)
{
    int rc = 0, runs = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat (argv[i], &st) != 0) {
            fprintf (stderr, "cannot read %s\n", argv[i]);
            rc = 1;
            continue;
        }
        if (!S_ISDIR (st.st_mode)) {
            rc |= s_run_file (argv[i]) != 0;
            runs++;
            continue;
        }
        DIR *dir = opendir (argv[i]);
        struct dirent *e;
        while (dir && (e = readdir (dir))) {
            char path[4096];
            snprintf (path, sizeof path, "%s/%s", argv[i], e->d_name);
            if (stat (path, &st) != 0 || !S_ISREG (st.st_mode))
                continue;
            rc |= s_run_file (path) != 0;
            runs++;
        }
        if (dir)
            closedir (dir);
        else
            rc = 1;
    }
    printf ("%s: %d inputs replayed\n", argv[0], runs);
    if (runs == 0) {
        fprintf (stderr, "no input to replay\n");
        rc = 1;
    }
    return rc;
}
