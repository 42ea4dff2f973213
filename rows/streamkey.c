/*  streamkey.c — random stream keys and the count of unknown acks. */
#include "rows/streamkey.h"

#include "embedflow/actor.h"
#include "embedflow/log.h"
#include "embedflow/metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <sys/random.h>

/* Unknown tallies are logged at most this often per thread. */
#define S_LOG_EVERY_US (10 * 1000000)

int
ef_stream_key_new (uint8_t key[EF_STREAM_KEY_LEN])
{
    size_t got = 0;
    while (got < EF_STREAM_KEY_LEN) {
        ssize_t n = getrandom (key + got, EF_STREAM_KEY_LEN - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        got += (size_t) n;
    }
    return 0;
}

bool
ef_stream_key_match (const uint8_t key[EF_STREAM_KEY_LEN],
                     ProtobufCBinaryData got)
{
    if (got.len != EF_STREAM_KEY_LEN || !got.data)
        return false;
    uint8_t diff = 0;
    for (size_t i = 0; i < EF_STREAM_KEY_LEN; i++)
        diff |= (uint8_t) (key[i] ^ got.data[i]);
    return diff == 0;
}

ProtobufCBinaryData
ef_stream_key_field (const uint8_t key[EF_STREAM_KEY_LEN])
{
    return (ProtobufCBinaryData){EF_STREAM_KEY_LEN, (uint8_t *) key};
}

static ef_counter_t *
s_counter (const char *link)
{
    return ef_metrics_counter_labeled (
        "embedflow_acks_unknown_total",
        "tallies in acks naming no stream running here with that id and key "
        "(forged, misdirected, or for a stream already over): dropped",
        (const char *const[]){"link", link, NULL});
}

void
ef_acks_unknown_init (const char *link)
{
    ef_counter_add (s_counter (link), 0);
}

void
ef_acks_unknown (const char *link, const char *from, uint64_t stream_id,
                 uint64_t rows)
{
    static _Thread_local int64_t logged_us;
    static _Thread_local uint64_t quiet;
    ef_counter_add (s_counter (link), 1);
    int64_t now = ef_clock_mono_us ();
    if (logged_us && now - logged_us < S_LOG_EVERY_US) {
        quiet++;
        return;
    }
    char more[64] = "";
    if (quiet)
        snprintf (more, sizeof more, " (and %" PRIu64 " not logged)", quiet);
    ef_warn ("links.%s: dropped an ack from %s for stream %" PRIu64 " (%" PRIu64
             " rows): no such stream here, or a wrong key%s",
             link, from && *from ? from : "?", stream_id, rows, more);
    logged_us = now;
    quiet = 0;
}
