/*  spool.h — a local, durable queue of records in one file.

    The DLQ writes dead letters here while PostgreSQL is unreachable and
    imports them once it is back. The file is an 8-byte magic and the
    8-byte little-endian offset of the first record not yet consumed,
    followed by records, each a 4-byte little-endian length, a 4-byte
    XXH32 of the payload and the payload. Appends are fsync'd before they return, so a
    record that was appended survives a crash of the process or the
    machine. Opening a file scans it: a torn last record (a crash during
    an append, never acknowledged) or a record whose checksum fails is
    cut off there, with the bytes dropped reported.

    One process at a time: the file is locked (flock) while open.
*/
#ifndef EF_SPOOL_H
#define EF_SPOOL_H

#include <stddef.h>
#include <stdint.h>

#include "embedflow/v1/pipeline.pb-c.h"

typedef struct ef_spool ef_spool_t;

/* Opens (creating) the spool at path and checks it. Returns the spool,
   or NULL with err set (cannot create or lock it, not a spool file). */
ef_spool_t *ef_spool_open (const char *path, char *err, size_t errlen);

/* Closes the file and NULLs *self_p; safe twice. */
void ef_spool_close (ef_spool_t **self_p);

/* Appends records data[i] of len[i] bytes (i < n) and fsyncs. Returns 0
   once they are on disk, -1 with err set (the file is cut back to where
   it was, so nothing half-written remains). */
int ef_spool_append (ef_spool_t *self, const uint8_t *const *data,
                     const size_t *len, size_t n, char *err, size_t errlen);

/* Records in the spool. */
size_t ef_spool_count (const ef_spool_t *self);

/* Bytes dropped when the spool was opened (a torn or corrupt tail). */
uint64_t ef_spool_dropped (const ef_spool_t *self);

/* Calls fn for every record, oldest first, until fn returns nonzero.
   The data is valid during the call only. Returns 0, fn's nonzero
   value, or -1 with err set on a read error. */
int ef_spool_each (ef_spool_t *self,
                   int (*fn) (void *arg, const uint8_t *data, size_t len),
                   void *arg, char *err, size_t errlen);

/* Marks the n oldest records consumed (stored elsewhere), fsync'd, so a
   reopen no longer sees them; all of them: the file is emptied. Returns
   0, -1 with err set. */
int ef_spool_consume (ef_spool_t *self, size_t n, char *err, size_t errlen);

/* Empties the spool (after its records are stored elsewhere) and
   fsyncs. Returns 0, -1 with err set. */
int ef_spool_clear (ef_spool_t *self, char *err, size_t errlen);

/* Appends letters[0..n) as packed DeadLetters, fsync'd. Returns 0 or
   -1 with err set, like ef_spool_append. */
int ef_spool_append_letters (ef_spool_t *self,
                             Embedflow__V1__DeadLetter *const *letters,
                             size_t n, char *err, size_t errlen);

/* Unpacks the oldest max records (or fewer) into *letters (a heap array
   of *n letters, each freed with embedflow__v1__dead_letter__free_unpacked).
   A record that is not a DeadLetter is skipped and counted in *skipped;
   *n + *skipped records were read (consume that many once stored).
   Returns 0, or -1 with err set (nothing is returned then). */
int ef_spool_load_letters (ef_spool_t *self, size_t max,
                           Embedflow__V1__DeadLetter ***letters, size_t *n,
                           size_t *skipped, char *err, size_t errlen);

#endif
