/*  fuzz_common.c — the fuzz targets' shared helpers. */
#include "fuzz.h"

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

const char *
ef_fuzz_file (const char *what, const uint8_t *data, size_t size)
{
    static char path[512];
    const char *tmp = getenv ("TMPDIR");
    snprintf (path, sizeof path, "%s/ef-fuzz-%d-%s", tmp && *tmp ? tmp : "/tmp",
              (int) getpid (), what);
    if (!data)
        return path;
    int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    size_t done = 0;
    while (fd >= 0 && done < size) {
        ssize_t r = write (fd, data + done, size - done);
        if (r <= 0)
            break;
        done += (size_t) r;
    }
    if (fd < 0 || done < size || close (fd) != 0) {
        fprintf (stderr, "cannot write %s\n", path);
        abort ();
    }
    return path;
}
