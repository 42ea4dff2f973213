/*  spool.c — a local, durable queue of records in one file. */
#include "rows/spool.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define S_MAGIC     "EFSPOOL1"
#define S_MAGIC_LEN 8
#define S_HEADER    16 /* magic + offset of the first unconsumed record */
#define S_HEAD      8  /* length + checksum */
#define S_MAX_REC   (256u * 1024 * 1024) /* larger lengths mean damage */

struct ef_spool {
    int fd;           /* open, locked */
    char *path;       /* for messages */
    off_t start;      /* first record not yet consumed */
    off_t end;        /* end of the last good record */
    size_t count;     /* records from start to end */
    uint64_t dropped; /* bytes cut off when opened */
};

/* Reads exactly n bytes at off. Returns 1, 0 at a short read (end of
   file), -1 on an error. */
static int
s_pread (int fd, void *buf, size_t n, off_t off)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread (fd, (char *) buf + got, n - got, off + (off_t) got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            return 0;
        got += (size_t) r;
    }
    return 1;
}

/* Little-endian u32 at p. */
static uint32_t
s_get32 (const uint8_t *p)
{
    return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16
           | (uint32_t) p[3] << 24;
}

/* Stores v little-endian at p. */
static void
s_put32 (uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t) v;
    p[1] = (uint8_t) (v >> 8);
    p[2] = (uint8_t) (v >> 16);
    p[3] = (uint8_t) (v >> 24);
}

/* Walks the records from `from` on, at most max of them (0 = all),
   calling fn for each good one (fn may be NULL), and sets *end to the end
   of the last one visited. Returns 0 (stopped at the end, at damage or
   after max), fn's nonzero value, or -1 on a read error. */
static int
s_scan (ef_spool_t *self, off_t from, size_t max, off_t *end, size_t *count,
        int (*fn) (void *, const uint8_t *, size_t), void *arg)
{
    off_t off = from;
    size_t n = 0;
    uint8_t *buf = NULL;
    size_t cap = 0;
    int rc = 0;
    while (max == 0 || n < max) {
        uint8_t head[S_HEAD];
        int r = s_pread (self->fd, head, S_HEAD, off);
        if (r <= 0) {
            rc = r < 0 ? -1 : 0;
            break;
        }
        uint32_t len = s_get32 (head), sum = s_get32 (head + 4);
        if (len > S_MAX_REC)
            break;
        if (len > cap) {
            uint8_t *grown = realloc (buf, len);
            if (!grown) {
                rc = -1;
                break;
            }
            buf = grown;
            cap = len;
        }
        r = s_pread (self->fd, buf, len, off + S_HEAD);
        if (r < 0) {
            rc = -1;
            break;
        }
        if (r == 0 || (uint32_t) XXH32 (buf, len, 0) != sum)
            break; /* torn or damaged: the good records end here */
        if (fn && (rc = fn (arg, buf, len)) != 0)
            break;
        off += S_HEAD + (off_t) len;
        n++;
    }
    free (buf);
    if (end)
        *end = off;
    if (count)
        *count = n;
    return rc;
}

ef_spool_t *
ef_spool_open (const char *path, char *err, size_t errlen)
{
    ef_spool_t *self = calloc (1, sizeof *self);
    if (!self || !(self->path = strdup (path))) {
        free (self);
        snprintf (err, errlen, "out of memory");
        return NULL;
    }
    self->fd = open (path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (self->fd < 0) {
        snprintf (err, errlen, "cannot open spool %s: %s", path,
                  strerror (errno));
        goto fail;
    }
    if (flock (self->fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf (err, errlen, "spool %s is in use by another process", path);
        goto fail;
    }
    struct stat st;
    if (fstat (self->fd, &st) != 0) {
        snprintf (err, errlen, "cannot stat spool %s: %s", path,
                  strerror (errno));
        goto fail;
    }
    uint8_t header[S_HEADER];
    int r =
        st.st_size >= S_HEADER ? s_pread (self->fd, header, S_HEADER, 0) : 0;
    if (r > 0 && memcmp (header, S_MAGIC, S_MAGIC_LEN) != 0) {
        snprintf (err, errlen, "%s is not an embedflow spool file", path);
        goto fail;
    }
    if (r == 0 && st.st_size > 0) {
        /* Shorter than a header: ours cut while being created, or not
           ours at all; only the first is emptied. */
        char magic[S_MAGIC_LEN] = {0};
        size_t have = (size_t) st.st_size < S_MAGIC_LEN ? (size_t) st.st_size
                                                        : S_MAGIC_LEN;
        if (s_pread (self->fd, magic, have, 0) <= 0
            || memcmp (magic, S_MAGIC, have) != 0) {
            snprintf (err, errlen, "%s is not an embedflow spool file", path);
            goto fail;
        }
    }
    if (r <= 0) {
        memcpy (header, S_MAGIC, S_MAGIC_LEN);
        s_put32 (header + 8, S_HEADER);
        s_put32 (header + 12, 0);
        if (ftruncate (self->fd, 0) != 0
            || pwrite (self->fd, header, S_HEADER, 0) != S_HEADER
            || fsync (self->fd) != 0) {
            snprintf (err, errlen, "cannot initialise spool %s: %s", path,
                      strerror (errno));
            goto fail;
        }
        st.st_size = S_HEADER;
    }
    uint64_t start = (uint64_t) s_get32 (header + 8)
                     | (uint64_t) s_get32 (header + 12) << 32;
    if (start < S_HEADER || start > (uint64_t) st.st_size) {
        snprintf (err, errlen, "spool %s: its header is damaged", path);
        goto fail;
    }
    self->start = (off_t) start;
    if (s_scan (self, self->start, 0, &self->end, &self->count, NULL, NULL)
        != 0) {
        snprintf (err, errlen, "cannot read spool %s: %s", path,
                  strerror (errno));
        goto fail;
    }
    if (self->end < st.st_size) {
        self->dropped = (uint64_t) (st.st_size - self->end);
        if (ftruncate (self->fd, self->end) != 0 || fsync (self->fd) != 0) {
            snprintf (err, errlen, "cannot repair spool %s: %s", path,
                      strerror (errno));
            goto fail;
        }
    }
    return self;
fail:
    ef_spool_close (&self);
    return NULL;
}

void
ef_spool_close (ef_spool_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ef_spool_t *self = *self_p;
    if (self->fd >= 0)
        close (self->fd); /* releases the lock */
    free (self->path);
    free (self);
    *self_p = NULL;
}

int
ef_spool_append (ef_spool_t *self, const uint8_t *const *data,
                 const size_t *len, size_t n, char *err, size_t errlen)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (len[i] > S_MAX_REC) {
            snprintf (err, errlen, "a record of %zu bytes is too large",
                      len[i]);
            return -1;
        }
        total += S_HEAD + len[i];
    }
    uint8_t *buf = malloc (total ? total : 1);
    if (!buf) {
        snprintf (err, errlen, "out of memory");
        return -1;
    }
    uint8_t *w = buf;
    for (size_t i = 0; i < n; i++) {
        s_put32 (w, (uint32_t) len[i]);
        s_put32 (w + 4, (uint32_t) XXH32 (data[i], len[i], 0));
        memcpy (w + S_HEAD, data[i], len[i]);
        w += S_HEAD + len[i];
    }
    size_t done = 0;
    while (done < total) {
        ssize_t r = pwrite (self->fd, buf + done, total - done,
                            self->end + (off_t) done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        done += (size_t) r;
    }
    free (buf);
    if (done < total || fsync (self->fd) != 0) {
        snprintf (err, errlen, "cannot write spool %s: %s", self->path,
                  strerror (errno));
        /* Leave no partial record behind (the scan would cut it too). */
        if (ftruncate (self->fd, self->end) != 0) {
            /* nothing more to do: the next open cuts the tail */
        }
        return -1;
    }
    self->end += (off_t) total;
    self->count += n;
    return 0;
}

size_t
ef_spool_count (const ef_spool_t *self)
{
    return self->count;
}

uint64_t
ef_spool_dropped (const ef_spool_t *self)
{
    return self->dropped;
}

int
ef_spool_each (ef_spool_t *self,
               int (*fn) (void *arg, const uint8_t *data, size_t len),
               void *arg, char *err, size_t errlen)
{
    int rc = s_scan (self, self->start, 0, NULL, NULL, fn, arg);
    if (rc < 0)
        snprintf (err, errlen, "cannot read spool %s: %s", self->path,
                  strerror (errno));
    return rc;
}

/* Records where the unconsumed records start (fsync'd). Returns 0, -1
   with err set. */
static int
s_set_start (ef_spool_t *self, off_t start, char *err, size_t errlen)
{
    uint8_t v[8];
    s_put32 (v, (uint32_t) ((uint64_t) start & 0xffffffffu));
    s_put32 (v + 4, (uint32_t) ((uint64_t) start >> 32));
    if (pwrite (self->fd, v, 8, S_MAGIC_LEN) != 8 || fsync (self->fd) != 0) {
        snprintf (err, errlen, "cannot update spool %s: %s", self->path,
                  strerror (errno));
        return -1;
    }
    self->start = start;
    return 0;
}

int
ef_spool_clear (ef_spool_t *self, char *err, size_t errlen)
{
    /* The start first: a crash in between leaves an empty spool. */
    if (s_set_start (self, S_HEADER, err, errlen) != 0)
        return -1;
    if (ftruncate (self->fd, S_HEADER) != 0 || fsync (self->fd) != 0) {
        snprintf (err, errlen, "cannot empty spool %s: %s", self->path,
                  strerror (errno));
        return -1;
    }
    self->end = S_HEADER;
    self->count = 0;
    return 0;
}

int
ef_spool_consume (ef_spool_t *self, size_t n, char *err, size_t errlen)
{
    if (n >= self->count)
        return ef_spool_clear (self, err, errlen);
    off_t next;
    size_t seen;
    if (s_scan (self, self->start, n, &next, &seen, NULL, NULL) != 0
        || seen != n) {
        snprintf (err, errlen, "cannot read spool %s: %s", self->path,
                  strerror (errno));
        return -1;
    }
    if (s_set_start (self, next, err, errlen) != 0)
        return -1;
    self->count -= n;
    return 0;
}

int
ef_spool_append_letters (ef_spool_t *self,
                         Embedflow__V1__DeadLetter *const *letters, size_t n,
                         char *err, size_t errlen)
{
    uint8_t **data = calloc (n ? n : 1, sizeof *data);
    size_t *len = calloc (n ? n : 1, sizeof *len);
    bool oom = !data || !len;
    for (size_t i = 0; !oom && i < n; i++) {
        len[i] = embedflow__v1__dead_letter__get_packed_size (letters[i]);
        data[i] = malloc (len[i] ? len[i] : 1);
        if (!data[i])
            oom = true;
        else
            embedflow__v1__dead_letter__pack (letters[i], data[i]);
    }
    int rc = -1;
    if (oom)
        snprintf (err, errlen, "out of memory");
    else
        rc = ef_spool_append (self, (const uint8_t *const *) data, len, n, err,
                              errlen);
    for (size_t i = 0; data && i < n; i++)
        free (data[i]);
    free (data);
    free (len);
    return rc;
}

typedef struct {
    Embedflow__V1__DeadLetter **letters; /* heap */
    size_t n;                            /* used */
    size_t cap;                          /* allocated */
    size_t skipped;                      /* records that do not unpack */
    size_t max;                          /* records to read at most */
} s_load_t;

/* ef_spool_each callback: unpacks one record into the s_load_t. */
static int
s_load_one (void *arg, const uint8_t *data, size_t len)
{
    s_load_t *load = arg;
    if (load->n + load->skipped == load->max)
        return 2; /* enough: not an error */
    Embedflow__V1__DeadLetter *letter =
        embedflow__v1__dead_letter__unpack (NULL, len, data);
    if (!letter) {
        load->skipped++;
        return 0;
    }
    if (load->n == load->cap) {
        size_t cap = load->cap ? load->cap * 2 : 64;
        void *grown = realloc (load->letters, cap * sizeof *load->letters);
        if (!grown) {
            embedflow__v1__dead_letter__free_unpacked (letter, NULL);
            return 1;
        }
        load->letters = grown;
        load->cap = cap;
    }
    load->letters[load->n++] = letter;
    return 0;
}

int
ef_spool_load_letters (ef_spool_t *self, size_t max,
                       Embedflow__V1__DeadLetter ***letters, size_t *n,
                       size_t *skipped, char *err, size_t errlen)
{
    s_load_t load = {NULL, 0, 0, 0, max};
    int rc = ef_spool_each (self, s_load_one, &load, err, errlen);
    if (rc == 2)
        rc = 0;
    if (rc != 0) {
        if (rc > 0)
            snprintf (err, errlen, "out of memory loading spool %s",
                      self->path);
        for (size_t i = 0; i < load.n; i++)
            embedflow__v1__dead_letter__free_unpacked (load.letters[i], NULL);
        free (load.letters);
        return -1;
    }
    *letters = load.letters;
    *n = load.n;
    *skipped = load.skipped;
    return 0;
}
