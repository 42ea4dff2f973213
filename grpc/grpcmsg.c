/*  grpcmsg.c — helpers shared by embedflow's gRPC code. */
#include "grpc/grpcmsg.h"

#include "embedflow/buf.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>
#include <string.h>

zframe_t *
ef_grpc_message_frame (grpc_byte_buffer *buf)
{
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init (&reader, buf))
        return NULL;
    zframe_t *frame = NULL;
    if (buf->type == GRPC_BB_RAW
        && buf->data.raw.compression == GRPC_COMPRESS_NONE) {
        size_t size = grpc_byte_buffer_length (buf);
        frame = zframe_new (NULL, size);
        grpc_slice slice;
        size_t at = 0;
        while (grpc_byte_buffer_reader_next (&reader, &slice)) {
            size_t len = GRPC_SLICE_LENGTH (slice);
            if (frame && at + len <= size)
                memcpy (zframe_data (frame) + at, GRPC_SLICE_START_PTR (slice),
                        len);
            at += len;
            grpc_slice_unref (slice);
        }
        if (at != size)
            zframe_destroy (&frame);
    }
    else {
        /* still compressed: the reader inflates, size known only after */
        grpc_slice all = grpc_byte_buffer_reader_readall (&reader);
        frame =
            zframe_new (GRPC_SLICE_START_PTR (all), GRPC_SLICE_LENGTH (all));
        grpc_slice_unref (all);
    }
    grpc_byte_buffer_reader_destroy (&reader);
    return frame;
}

const char *
ef_grpc_status_name (grpc_status_code code)
{
    static const char *names[] = {
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    };
    if ((int) code >= 0 && (size_t) code < sizeof names / sizeof names[0])
        return names[code];
    return "?";
}

gpr_timespec
ef_grpc_deadline_ms (int64_t ms)
{
    if (ms <= 0)
        return gpr_inf_past (GPR_CLOCK_MONOTONIC);
    return gpr_time_add (gpr_now (GPR_CLOCK_MONOTONIC),
                         gpr_time_from_millis (ms, GPR_TIMESPAN));
}

char *
ef_grpc_read_pem (const char *path)
{
    FILE *f = fopen (path, "rb");
    if (!f)
        return NULL;
    ef_buf_t b = {0};
    char chunk[4096];
    size_t n;
    while ((n = fread (chunk, 1, sizeof chunk, f)) > 0)
        ef_buf_put (&b, chunk, n);
    bool failed = ferror (f) != 0;
    fclose (f);
    bool empty = b.len == 0;
    char *data = ef_buf_take (&b, NULL);
    if (failed || empty || !data) {
        free (data);
        errno = failed ? EIO : empty ? EINVAL : ENOMEM;
        return NULL;
    }
    return data;
}

void
ef_grpc_cq_destroy (grpc_completion_queue *cq)
{
    if (!cq)
        return;
    grpc_completion_queue_shutdown (cq);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next (
            cq, gpr_inf_future (GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
    }
    grpc_completion_queue_destroy (cq);
}
