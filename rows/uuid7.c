/*  uuid7.c — UUIDv7 generation and UUID text parsing. */
#include "rows/uuid7.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t s_last_ms;      /* timestamp of the last key */
static uint8_t s_last_tail[10]; /* bytes 6..15 of the last key, unversioned */

static uint64_t
s_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

/* Fills buf with random bytes; falls back to a clock-seeded generator if
   the kernel call fails, since a key must be minted regardless. */
static void
s_random (uint8_t *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = getrandom (buf + got, len - got, 0);
        if (n <= 0)
            break;
        got += (size_t) n;
    }
    if (got < len) {
        struct timespec ts;
        clock_gettime (CLOCK_MONOTONIC, &ts);
        uint64_t x = (uint64_t) ts.tv_nsec * 0x9e3779b97f4a7c15ull
                     ^ (uint64_t) ts.tv_sec;
        for (size_t i = got; i < len; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            buf[i] = (uint8_t) x;
        }
    }
}

/* Adds one to the 74-bit counter formed by the 4 low bits of tail[0]
   (rand_a high), tail[1], the 6 low bits of tail[2] (rand_b high) and
   tail[3..9]. Returns 1 on overflow. */
static int
s_increment (uint8_t tail[10])
{
    for (int i = 9; i >= 3; i--)
        if (++tail[i] != 0)
            return 0;
    if ((tail[2] & 0x3f) != 0x3f) {
        tail[2] = (uint8_t) ((tail[2] & 0xc0) | ((tail[2] + 1) & 0x3f));
        return 0;
    }
    tail[2] &= 0xc0;
    if (++tail[1] != 0)
        return 0;
    if ((tail[0] & 0x0f) != 0x0f) {
        tail[0] = (uint8_t) ((tail[0] & 0xf0) | ((tail[0] + 1) & 0x0f));
        return 0;
    }
    tail[0] &= 0xf0;
    return 1;
}

void
ef_uuid7_generate (uint8_t out[16])
{
    uint64_t now = s_now_ms ();
    /* Random bytes are drawn only for a new millisecond: within one the
       key counts up, and a system call per row cost more than the rest
       of making the key. */
    pthread_mutex_lock (&s_lock);
    if (now > s_last_ms) {
        s_last_ms = now;
        s_random (s_last_tail, sizeof s_last_tail);
        /* Leave headroom so a burst within one millisecond cannot
           overflow: the top counter bit starts clear. */
        s_last_tail[0] &= 0x07;
    }
    else if (s_increment (s_last_tail)) {
        s_last_ms++; /* 2^74 keys in one millisecond: borrow the next */
        s_random (s_last_tail, sizeof s_last_tail);
        s_last_tail[0] &= 0x07;
    }
    uint64_t ms = s_last_ms;
    memcpy (out + 6, s_last_tail, 10);
    pthread_mutex_unlock (&s_lock);
    for (int i = 0; i < 6; i++)
        out[i] = (uint8_t) (ms >> (8 * (5 - i)));
    out[6] = (uint8_t) (0x70 | (out[6] & 0x0f));
    out[8] = (uint8_t) (0x80 | (out[8] & 0x3f));
}

static int
s_hex (char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int
ef_uuid_parse (const char *text, uint8_t out[16])
{
    if (!text)
        return -1;
    size_t len = strlen (text);
    bool braces = len == 38 && text[0] == '{' && text[37] == '}';
    if (braces) {
        text++;
        len -= 2;
    }
    bool dashed = len == 36;
    if (!dashed && len != 32)
        return -1;
    size_t pos = 0;
    for (int i = 0; i < 16; i++) {
        if (dashed && (pos == 8 || pos == 13 || pos == 18 || pos == 23)) {
            if (text[pos] != '-')
                return -1;
            pos++;
        }
        int hi = s_hex (text[pos]), lo = s_hex (text[pos + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t) (hi << 4 | lo);
        pos += 2;
    }
    return 0;
}

void
ef_uuid_format (const uint8_t id[16], char out[37])
{
    static const char digits[] = "0123456789abcdef";
    size_t pos = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[pos++] = '-';
        out[pos++] = digits[id[i] >> 4];
        out[pos++] = digits[id[i] & 0x0f];
    }
    out[pos] = '\0';
}

int
ef_uuid_version (const uint8_t id[16])
{
    return id[6] >> 4;
}

uint64_t
ef_uuid7_millis (const uint8_t id[16])
{
    uint64_t ms = 0;
    for (int i = 0; i < 6; i++)
        ms = ms << 8 | id[i];
    return ms;
}
