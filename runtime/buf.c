/*  buf.c — the growable byte buffer. */
#include "embedflow/buf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int
ef_buf_reserve (ef_buf_t *b, size_t n)
{
    if (b->failed)
        return -1;
    if (n >= SIZE_MAX / 2 - b->len) {
        b->failed = true;
        return -1;
    }
    if (b->len + n + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1)
        cap *= 2;
    char *grown = realloc (b->data, cap);
    if (!grown) {
        b->failed = true;
        return -1;
    }
    b->data = grown;
    b->cap = cap;
    b->data[b->len] = '\0';
    return 0;
}

int
ef_buf_put (ef_buf_t *b, const void *p, size_t n)
{
    if (ef_buf_reserve (b, n) != 0)
        return -1;
    if (n)
        memcpy (b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int
ef_buf_puts (ef_buf_t *b, const char *s)
{
    return ef_buf_put (b, s, strlen (s));
}

int
ef_buf_printf (ef_buf_t *b, const char *fmt, ...)
{
    if (ef_buf_reserve (b, 0) != 0)
        return -1;
    va_list args;
    va_start (args, fmt);
    int n = vsnprintf (b->data + b->len, b->cap - b->len, fmt, args);
    va_end (args);
    if (n >= 0 && (size_t) n >= b->cap - b->len) {
        /* did not fit: grow to the size it told and format again */
        if (ef_buf_reserve (b, (size_t) n) != 0)
            return -1;
        va_start (args, fmt);
        n = vsnprintf (b->data + b->len, b->cap - b->len, fmt, args);
        va_end (args);
    }
    if (n < 0) {
        b->data[b->len] = '\0';
        b->failed = true;
        return -1;
    }
    b->len += (size_t) n;
    return 0;
}

char *
ef_buf_take (ef_buf_t *b, size_t *len)
{
    if (!b->failed && !b->data)
        ef_buf_reserve (b, 0);
    char *data = b->failed ? NULL : b->data;
    if (data && len)
        *len = b->len;
    if (!data)
        free (b->data);
    *b = (ef_buf_t){0};
    return data;
}

void
ef_buf_free (ef_buf_t *b)
{
    free (b->data);
    *b = (ef_buf_t){0};
}
