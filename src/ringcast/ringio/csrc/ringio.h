/* ringio internals shared by core.c and the two engines.
 *
 * Some facts this code is built on, with their public sources (liburing man
 * pages and issues are those of github.com/axboe/liburing):
 *
 *  - io_uring does not keep two sends to one socket in order once the first
 *    one has to wait for socket space: a later send can be issued, and
 *    complete, first (Jens Axboe in liburing issue #1001; liburing's
 *    examples/proxy.c serializes its sends for this reason). So every
 *    connection has at most one send in flight; later frames wait in a
 *    per-connection queue here, and when the send completes everything queued
 *    goes out in one sendmsg.
 *  - A send may complete short even with MSG_WAITALL: the kernel resumes a
 *    partial stream send itself (io_net_retry() in io_uring/net.c) but "it can
 *    still happen for dozens of reasons", e.g. a shutdown or a failed
 *    allocation (Pavel Begunkov in liburing issue #1337). The queue entry
 *    keeps an offset, and the next send resumes from it.
 *  - A frame is shared by every subscriber: it lives in one refcounted slot
 *    and each queue entry holds one reference. For SEND_ZC the memory must
 *    also outlive the notification CQE, which holds a reference of its own:
 *    "The user must not modify the data buffer until the notification is
 *    posted" (io_uring_prep_send_zc.3; IORING_OP_SEND_ZC in io_uring_enter.2).
 *  - A multishot request is over when its CQE lacks IORING_CQE_F_MORE, and is
 *    then issued again; an empty buffer ring ends it with -ENOBUFS
 *    (io_uring_multishot.7, io_uring_prep_recv.3, io_uring_provided_buffers.7).
 *  - user_data packs the operation, a generation and an index, so a CQE for
 *    an id that was closed and reused is recognised (see ud_pack()).
 */
#ifndef RINGIO_H
#define RINGIO_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <liburing.h>

#include "ringio_api.h"

/* Constants newer than the liburing 2.3 headers (Debian bookworm). */
#ifndef IORING_SEND_ZC_REPORT_USAGE
#define IORING_SEND_ZC_REPORT_USAGE (1U << 3)
#endif
#ifndef IORING_NOTIF_USAGE_ZC_COPIED
#define IORING_NOTIF_USAGE_ZC_COPIED (1U << 31)
#endif

#define RIO_IOV_MAX 32          /* slots coalesced into one sendmsg */
/* The most events one step adds: one CQE (ACCEPT or REFUSED, then
 * ACCEPT_ERROR; or DATA, then HUP or CLOSED), one epoll event, or the OVERFLOW,
 * HUP and CLOSED one connection owes. The engines reserve this much room before
 * each step (see "events" in core.c). */
#define RIO_EV_PER_STEP 3
#define RIO_NONE UINT32_MAX
#define RIO_CHUNK 512           /* arena allocation unit, bytes */

enum { ENGINE_URING = 0, ENGINE_EPOLL = 1 };
enum { CK_FREE = 0, CK_STREAM, CK_LISTENER };
enum {
    CS_OPEN = 1,                /* sending and receiving                       */
    CS_DRAINING,                /* closed by the caller, flushing its queue    */
    CS_LINGER,                  /* flushed and shut down for writing; reading
                                   and discarding until the peer's EOF, so
                                   unread input cannot turn close into a RST
                                   that destroys the last bytes we sent    */
    CS_CLOSING,                 /* fd closed, waiting for operations to finish */
};
/* Events a connection holds because the event array was full (conn.owes),
 * reported in this order. */
enum { OWE_OVERFLOW = 1, OWE_HUP = 2, OWE_CLOSED = 4 };

/* One queued frame (or run of frames) for one connection. */
typedef struct qent {
    uint32_t slot;
    uint32_t off;               /* bytes of it already sent */
    uint32_t len;
} qent;

typedef struct send_ctx {
    struct msghdr msg;
    struct iovec iov[RIO_IOV_MAX];
} send_ctx;

typedef struct conn {
    int fd;
    uint32_t gen;
    uint8_t kind;
    uint8_t state;
    uint8_t sending;            /* uring: a send is in flight; epoll: EPOLLOUT armed */
    uint8_t recv_armed;         /* uring: multishot recv/accept active; epoll: in the set */
    uint8_t send_broken;        /* a send failed: nothing more goes out              */
    uint8_t overflowed;         /* overflow reported; cleared when the queue empties */
    uint8_t zc_off;             /* the kernel copied a zero-copy send to this peer   */
    uint8_t zc_unchecked;       /* uring: accepted; whether the peer is loopback is
                                   asked at its first zero-copy candidate           */
    uint8_t rd_closed;          /* EOF or error seen on receive                      */
    uint8_t hup_sent;
    uint8_t accept_paused;
    uint8_t fixed;              /* uring: installed in the file table at its id      */
    uint8_t send_zc;            /* uring: the send in flight is a zero-copy one      */
    uint8_t closed_by_caller;   /* rio_close() was called: report RIO_EV_CLOSED      */
    uint8_t owes;               /* OWE_* events waiting in l->owed for room; the id
                                   is not reused until they are out               */
    int32_t owed_err;           /* the owed HUP's errno                             */
    uint32_t ops;               /* uring operations in flight that name this id     */
    uint32_t inflight;          /* queue entries carried by the send in flight      */
    send_ctx *sc;               /* iovec for a coalesced send in flight             */
    qent *q;
    uint32_t qcap, qhead, qlen;
    uint32_t next_free;
    uint64_t queued;            /* bytes in the queue not yet sent                  */
    uint64_t owed_queued;       /* the owed OVERFLOW's bytes queued                 */
    uint8_t hb;                 /* heartbeats on (rio_heartbeat)                    */
    uint8_t hb_aligned;         /* what arrives next starts where the absorber reads */
    uint8_t hb_waiting;         /* a heartbeat went out, no byte has arrived since  */
    uint32_t hb_rx;             /* ms: the last byte received (or heartbeats on)    */
    uint32_t hb_tx;             /* ms: the last byte sent (or heartbeats on)        */
    uint32_t hb_sent;           /* ms: the outstanding heartbeat was queued         */
} conn;

typedef struct slot {
    char *data;
    uint32_t len;
    uint32_t refs;
    uint32_t chunk;             /* first arena chunk                                */
    uint32_t nchunks;           /* 0: heap memory                                   */
    uint32_t next_free;
} slot;

/* A zero-copy send: its notification releases the slot reference it holds. */
typedef struct zc_rec {
    uint32_t slot;
    uint32_t conn;
    uint32_t gen;
    uint32_t next_free;
} zc_rec;

typedef struct engine_ops {
    int (*listen)(rio_loop *l, uint32_t id);
    int (*adopt)(rio_loop *l, uint32_t id);
    int (*resume_accept)(rio_loop *l, uint32_t id);
    void (*kick)(rio_loop *l, uint32_t id);       /* start sending if idle    */
    void (*flush)(rio_loop *l);                   /* submit what is prepared  */
    void (*close)(rio_loop *l, uint32_t id);      /* close now                */
    int (*wait)(rio_loop *l, int timeout_ms);     /* wait and process         */
    void (*destroy)(rio_loop *l);
} engine_ops;

struct rio_loop {
    rio_params p;
    const engine_ops *eng;
    rio_probe probe;
    rio_stats st;
    int failed;                 /* -errno once the engine failed for good (see
                                   enter_failed() in uring.c): rio_reap returns it */
    int behind;                 /* the last wait left arrived work unread (no room
                                   for its events, receives to re-arm, task_work
                                   an enter left, a full epoll batch): silence
                                   is not judged meanwhile                      */

    /* io_uring engine */
    struct io_uring ring;
    int ring_ok;
    int in_drain;
    struct io_uring_buf_ring *br;
    char *bufs;
    uint32_t *rearm;            /* FIFO of ids whose recv must be re-armed      */
    uint32_t rearm_head, nrearm;
    uint8_t *rearm_mark;        /* the id is in the FIFO (at most once)         */
    send_ctx **sc_free;
    uint32_t nsc_free, sc_cap;
    zc_rec *zc;
    uint32_t zc_cap, zc_free;

    /* epoll engine */
    int epfd;

    /* registered frame arena */
    char *arena;
    uint64_t *arena_map;
    uint32_t arena_chunks;
    uint32_t arena_cursor;

    conn *conns;
    uint32_t conn_free;

    slot *slots;
    uint32_t slots_cap, slot_free;

    rio_event *ev;
    uint32_t nev, evcap, ev_returned;
    uint32_t *owed;             /* FIFO of ids with owed events (each at most once,
                                   so max_conns entries: owing never allocates)   */
    uint32_t owed_head, nowed;
    char *data;
    uint32_t ndata, data_returned;

    /* heartbeats (rio_heartbeat_config) */
    uint32_t hb_interval, hb_timeout, hb_period;    /* ms; interval 0: off          */
    uint32_t hb_next;           /* ms: when the connections are looked at next      */
    int64_t hb_slot;            /* the heartbeat's bytes (a reference held), or -1  */
    int (*hb_absorb)(const uint8_t *data, size_t len, int *aligned);
};

/* user_data, the 64 bits the kernel hands back with a CQE:
 *
 *   [op:8][generation:24][index:32]
 *
 * What index and generation hold depends on op:
 *
 *   OP_ACCEPT, OP_RECV, OP_SEND   index: the connection's (for OP_ACCEPT the
 *                                 listener's) id; generation: the
 *                                 id's generation (conn.gen, low 24 bits) when
 *                                 the SQE was prepared. A CQE whose generation
 *                                 is not the id's current one is stale: the id
 *                                 was freed and reused (gen_matches()).
 *   OP_SENDZC                     index: a zero-copy record (l->zc[index]),
 *                                 which keeps the connection id and its full
 *                                 generation itself; generation: 0. The record
 *                                 lives until the send's last CQE (the
 *                                 notification, if one follows), whatever
 *                                 happens to the connection meanwhile.
 *   OP_CANCEL                     index and generation 0: nothing to look up,
 *                                 the CQE is ignored (the cancelled request
 *                                 reports its own end).
 *   OP_CLOSE                      index and generation: a closed connection's
 *                                 table slot being removed; its CQE frees the
 *                                 id (see uring_close).
 *   0                             never packed; a CQE with op 0 is ignored.
 *
 * The generation wraps after 2^24 reuses of one id; a CQE that old cannot be
 * outstanding, since an id is only freed once no operation names it. */
enum { OP_ACCEPT = 1, OP_RECV, OP_SEND, OP_SENDZC, OP_CANCEL, OP_CLOSE };

static inline uint64_t ud_pack(uint32_t op, uint32_t gen, uint32_t idx)
{
    return ((uint64_t)op << 56) | ((uint64_t)(gen & 0xffffff) << 32) | idx;
}
static inline uint32_t ud_op(uint64_t ud) { return (uint32_t)(ud >> 56); }
static inline uint32_t ud_gen(uint64_t ud) { return (uint32_t)(ud >> 32) & 0xffffff; }
static inline uint32_t ud_idx(uint64_t ud) { return (uint32_t)ud; }
static inline int gen_matches(const conn *c, uint64_t ud)
{
    return (c->gen & 0xffffff) == ud_gen(ud);
}

/* core.c: shared by both engines */
int rio_ev_reserve(rio_loop *l, uint32_t n);
void rio_ev_put(rio_loop *l, uint32_t kind, uint32_t conn, int32_t res,
                uint32_t len, uint64_t aux);
void rio_fail(rio_loop *l, int err);
char *rio_data_reserve(rio_loop *l, uint32_t *room);
void rio_data_commit(rio_loop *l, uint32_t id, uint32_t n);
int64_t rio_conn_alloc(rio_loop *l, int fd, int kind);
void rio_conn_free(rio_loop *l, uint32_t id);
void rio_slot_unref(rio_loop *l, uint32_t s);
uint32_t rio_fill_iov(rio_loop *l, conn *c, struct iovec *iov, uint32_t max);
void rio_consume(rio_loop *l, uint32_t id, uint64_t n);
void rio_drop_queue(rio_loop *l, conn *c);
void rio_hup(rio_loop *l, uint32_t id, int err);
void rio_send_failed(rio_loop *l, uint32_t id, int err);
void rio_hard_close(rio_loop *l, uint32_t id);
void rio_flushed(rio_loop *l, uint32_t id);
int rio_slot_in_arena(rio_loop *l, uint32_t s);

extern const engine_ops rio_uring_ops;
extern const engine_ops rio_epoll_ops;
int rio_uring_open(rio_loop *l, int *stage);
int rio_epoll_open(rio_loop *l, int *stage);

#endif
