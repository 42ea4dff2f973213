/*  grpcmsg.c — helpers shared by embedflow's gRPC code. */
#include "pipeline/grpcmsg.h"

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
