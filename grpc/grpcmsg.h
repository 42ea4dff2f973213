/*  grpcmsg.h — what the gRPC code of embedflow (server, puller, load
    generator) shares: turning a received message into one frame, status
    names, deadlines, the PEM files of TLS credentials, and tearing down
    a completion queue.
*/
#ifndef EF_GRPCMSG_H
#define EF_GRPCMSG_H

#include <czmq.h>
#include <grpc/grpc.h>
#include <grpc/support/time.h>
#include <stdint.h>

/* Copies a received message into one frame (decompressing when needed),
   so the bytes are copied once and travel on unchanged. The buffer stays
   the caller's. Returns NULL when out of memory or it cannot be read. */
zframe_t *ef_grpc_message_frame (grpc_byte_buffer *buf);

/* The name of a status code ("UNAVAILABLE"), "?" when unknown. */
const char *ef_grpc_status_name (grpc_status_code code);

/* An absolute monotonic deadline ms from now; ms <= 0 is the past. */
gpr_timespec ef_grpc_deadline_ms (int64_t ms);

/* Reads a PEM file (certificate, key, roots) whole into a NUL-terminated
   heap string the caller frees. NULL with errno set when it cannot be
   read or is empty (EINVAL). */
char *ef_grpc_read_pem (const char *path);

/* Shuts a completion queue made for next() down, takes what is left on
   it and destroys it. Every call on it must be over or cancelled. */
void ef_grpc_cq_destroy (grpc_completion_queue *cq);

#endif
