/*  ef_actor_send_local / ef_actor_local_take: objects handed between
    actors of one process without encoding, freed when nobody takes them,
    and never sent to nor believed from another process. */
#include "ef_test.h"

#include "embedflow/runtime.h"
#include "runtime/internal.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#define TOTAL 200

static atomic_long s_taken, s_wrong, s_freed, s_refused, s_plain;
static atomic_bool s_take; /* the receiver takes what it gets */
static ef_runtime_t *s_rt;

static void
s_count_free (void *p)
{
    atomic_fetch_add (&s_freed, 1);
    free (p);
}

static int
s_sender_init (ef_actor_t *a)
{
    ef_actor_wake_in (a, 0);
    return 0;
}

/* Sends TOTAL numbers as objects; the link's high-water mark paces it. */
static int
s_sender_tick (ef_actor_t *a)
{
    int out = ef_actor_port (a, "out");
    for (int64_t i = 0; i < TOTAL; i++) {
        int64_t *n = malloc (sizeof *n);
        if (!n)
            return -1;
        *n = i;
        if (ef_actor_send_local (a, out, 0, n, s_count_free) != 0)
            return -1;
    }
    return 0;
}

static int
s_receiver_handle (ef_actor_t *a, int port, zmsg_t **msg_p)
{
    static int64_t next;
    long seen = atomic_load (&s_taken) + atomic_load (&s_plain) + 1;
    if (atomic_load (&s_take)) {
        void (*free_fn) (void *) = NULL;
        int64_t *n = ef_actor_local_take (a, port, *msg_p, &free_fn);
        if (!n || *n != next++ || free_fn != s_count_free)
            atomic_fetch_add (&s_wrong, 1);
        free (n);
        atomic_fetch_add (&s_taken, 1);
    }
    else
        atomic_fetch_add (&s_plain, 1); /* destroyed by the runtime */
    if (seen == TOTAL)
        ef_runtime_stop (s_rt);
    return 0;
}

static const ef_port_def_t s_sender_ports[] = {
    {"out", EF_PORT_OUT, "number", false, 20}, {NULL, 0, NULL, false, 0}};
static const ef_port_def_t s_receiver_ports[] = {
    {"in", EF_PORT_IN, "number", false, 20}, {NULL, 0, NULL, false, 0}};
static const ef_option_t s_none[] = {EF_OPTION_END};

static const ef_actor_def_t s_sender = {.name = "sender",
                                        .summary = "sends objects",
                                        .options = s_none,
                                        .ports = s_sender_ports,
                                        .flags = EF_ACTOR_SOURCE,
                                        .default_instances = 1,
                                        .init = s_sender_init,
                                        .tick = s_sender_tick};
static const ef_actor_def_t s_receiver = {.name = "receiver",
                                          .summary = "takes objects",
                                          .options = s_none,
                                          .ports = s_receiver_ports,
                                          .default_instances = 1,
                                          .handle = s_receiver_handle};

static void
s_run (bool take)
{
    char err[256];
    atomic_store (&s_take, take);
    ef_registry_t *reg = ef_registry_new ();
    ef_registry_add (reg, &s_sender);
    ef_registry_add (reg, &s_receiver);
    ef_registry_add_link (reg, "objects", "sender.out", "receiver.in");
    ef_config_t *c = ef_config_new (reg, s_none, 0, err, sizeof err);
    EF_REQUIRE (c && ef_config_validate (c, err, sizeof err) == 0);
    s_rt = ef_runtime_new (c);
    EF_REQUIRE (ef_runtime_start (s_rt, err, sizeof err) == 0);
    EF_CHECK (ef_runtime_wait (s_rt) == 0);
    ef_runtime_destroy (&s_rt);
    ef_config_destroy (&c);
    ef_registry_destroy (&reg);
}

EF_TEST (runtime_send_local_hands_objects_over)
{
    s_run (true);
    EF_CHECK (atomic_load (&s_taken) == TOTAL);
    EF_CHECK (atomic_load (&s_wrong) == 0);
    /* taken objects are the receiver's: the runtime frees none */
    EF_CHECK (atomic_load (&s_freed) == 0);
}

EF_TEST (runtime_send_local_frees_what_nobody_takes)
{
    s_run (false);
    EF_CHECK (atomic_load (&s_plain) == TOTAL);
    EF_CHECK (atomic_load (&s_freed) == TOTAL);
}

/* --- across processes: a tcp link ---------------------------------------- */

/* What a peer elsewhere would send to pass an address off as an object:
   the runtime's frame layout, made up. */
typedef struct {
    uint64_t magic;
    void *ptr;
    void (*free_fn) (void *);
} s_forged_t;

static int64_t s_victim = 42;

static int
s_remote_tick (ef_actor_t *a)
{
    int out = ef_actor_port (a, "out");
    int64_t *n = malloc (sizeof *n);
    if (!n)
        return -1;
    if (ef_actor_send_local (a, out, 0, n, s_count_free) != 0)
        atomic_fetch_add (&s_refused, 1);
    s_forged_t f = {0x65666c6f63616c31ull, &s_victim, NULL};
    zmsg_t *m = zmsg_new ();
    zmsg_addmem (m, &f, sizeof f);
    return ef_actor_send (a, out, 0, &m);
}

static int
s_remote_handle (ef_actor_t *a, int port, zmsg_t **msg_p)
{
    if (ef_actor_local_take (a, port, *msg_p, NULL) != NULL)
        atomic_fetch_add (&s_wrong, 1);
    atomic_fetch_add (&s_plain, 1);
    ef_runtime_stop (s_rt);
    return 0;
}

static const ef_actor_def_t s_remote_sender = {.name = "sender",
                                               .summary = "sends objects",
                                               .options = s_none,
                                               .ports = s_sender_ports,
                                               .flags = EF_ACTOR_SOURCE,
                                               .default_instances = 1,
                                               .init = s_sender_init,
                                               .tick = s_remote_tick};
static const ef_actor_def_t s_remote_receiver = {.name = "receiver",
                                                 .summary = "takes objects",
                                                 .options = s_none,
                                                 .ports = s_receiver_ports,
                                                 .default_instances = 1,
                                                 .handle = s_remote_handle};

/* A loopback port nobody listens on now. */
static int
s_free_port (void)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    int port = -1;
    if (fd >= 0 && bind (fd, (struct sockaddr *) &sa, sizeof sa) == 0
        && getsockname (fd, (struct sockaddr *) &sa, &len) == 0)
        port = ntohs (sa.sin_port);
    if (fd >= 0)
        close (fd);
    return port;
}

EF_TEST (runtime_send_local_never_crosses_hosts)
{
    atomic_store (&s_freed, 0);
    atomic_store (&s_plain, 0);
    atomic_store (&s_wrong, 0);
    char err[256], ep[64];
    int port = s_free_port ();
    EF_REQUIRE (port > 0);
    snprintf (ep, sizeof ep, "tcp://127.0.0.1:%d", port);
    ef_registry_t *reg = ef_registry_new ();
    ef_registry_add (reg, &s_remote_sender);
    ef_registry_add (reg, &s_remote_receiver);
    ef_registry_add_link (reg, "objects", "sender.out", "receiver.in");
    ef_config_t *c = ef_config_new (reg, s_none, 0, err, sizeof err);
    EF_REQUIRE (c);
    EF_REQUIRE (ef_config_set (c, "links.objects.endpoint", ep, err, sizeof err)
                == 0);
    EF_REQUIRE (ef_config_validate (c, err, sizeof err) == 0);
    EF_REQUIRE (ef_config_link_crosses_hosts (c, "objects"));
    s_rt = ef_runtime_new (c);
    EF_REQUIRE (ef_runtime_start (s_rt, err, sizeof err) == 0);
    EF_CHECK (ef_runtime_wait (s_rt) == 0);
    /* the object was refused, and freed, before anything was sent */
    EF_CHECK (atomic_load (&s_refused) == 1);
    EF_CHECK (atomic_load (&s_freed) == 1);
    /* the forged frame arrived and was not believed */
    EF_CHECK (atomic_load (&s_plain) == 1);
    EF_CHECK (atomic_load (&s_wrong) == 0);
    ef_runtime_destroy (&s_rt);
    ef_config_destroy (&c);
    ef_registry_destroy (&reg);
}
