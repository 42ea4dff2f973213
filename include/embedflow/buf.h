/*  buf.h — a growable byte buffer, the one embedflow appends into.

    Text (metrics pages, SQL array literals, canonical JSON) and bytes
    (protobuf built by hand) alike. A failed allocation is sticky: every
    later append does nothing and ef_buf_take returns NULL, so a builder
    appends without checking each step and checks once at the end.
*/
#ifndef EF_BUF_H
#define EF_BUF_H

#include <stdbool.h>
#include <stddef.h>

#include "embedflow/export.h"

EF_API_BEGIN

typedef struct {
    char *data;  /* heap; NUL-terminated after the first append */
    size_t len;  /* used, without the NUL */
    size_t cap;  /* allocated */
    bool failed; /* an allocation failed: appends do nothing */
} ef_buf_t;

/* Makes room for n more bytes (and a NUL after them), so data + len may
   be written directly up to n bytes. Returns 0, -1 when out of memory
   (failed set). */
int ef_buf_reserve (ef_buf_t *b, size_t n);

/* Appends n bytes of p. Returns 0, -1 when out of memory. */
int ef_buf_put (ef_buf_t *b, const void *p, size_t n);

/* Appends the string s. Returns 0, -1 when out of memory. */
int ef_buf_puts (ef_buf_t *b, const char *s);

/* Appends printf-formatted text. Returns 0, -1 when out of memory or
   the format fails. */
int ef_buf_printf (ef_buf_t *b, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));

/* Hands over the data (the caller frees it; never NULL when nothing
   failed, "" when nothing was appended) and its length in *len when len
   is not NULL. NULL when an append failed. b is empty afterwards. */
char *ef_buf_take (ef_buf_t *b, size_t *len);

/* Frees the data; b is empty afterwards. */
void ef_buf_free (ef_buf_t *b);

EF_API_END

#endif
