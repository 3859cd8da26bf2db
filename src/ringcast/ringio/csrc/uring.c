/* The io_uring engine.
 *
 * How it fits together:
 *  - One multishot accept per listener and one multishot recv per connection.
 *    A multishot request is finished when its CQE lacks IORING_CQE_F_MORE and
 *    is then re-armed. After -ENOBUFS that waits until buffers are back, at
 *    the end of the same drain (buffers are returned as soon as their bytes
 *    are copied out), and goes round robin, no more at a time than there are
 *    buffers (rearm_some).
 *  - Receive buffers come from one provided-buffer ring shared by every
 *    connection, so receive memory does not grow with connections.
 *  - Sends: see ringio.h. SQEs are prepared as fan-out walks its ids and
 *    submitted in one io_uring_enter; when the SQ fills, it is submitted and
 *    the CQ drained before preparing more.
 *  - With DEFER_TASKRUN completions are only produced when we ask for them
 *    (GETEVENTS; io_uring_setup.2), so every wait goes through
 *    submit_and_wait_timeout or submit_and_get_events, never a bare peek.
 *  - io_uring_enter's errors are sorted out in one place, enter_failed(), out
 *    of the callers' way (the way liburing's examples/proxy.c keeps error
 *    handling out of its main path): a transient one is retried, anything
 *    else fails the loop.
 *  - An fd number is closed only after every prepared SQE naming it has been
 *    submitted, so a new connection that reuses the number cannot receive a
 *    stale send.
 *  - Fixed files: each connection's fd is also installed in the ring's sparse
 *    file table at the connection's id, and its requests name that index
 *    (IOSQE_FIXED_FILE), so the kernel skips an fget/fput per request. The
 *    table is sized min(max_conns, RLIMIT_NOFILE) (a larger one fails with
 *    EMFILE); a connection without a table entry uses its fd. The entry is
 *    cleared before the fd is closed: the table holds a file reference, and
 *    the socket would otherwise outlive close().
 */
#include "ringio.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#define RIO_MAX_FIXED_FILES (1u << 20)    /* the kernel's IORING_MAX_FIXED_FILES */

#define RIO_ENTER_TRIES 8     /* io_uring_enter calls per submit before giving up */

static unsigned drain(rio_loop *l);
static void finish_op(rio_loop *l, uint32_t id);

/* io_uring_enter failed with r on its tries-th call in a row. Returns 1 to call
 * it again, 0 when the loop has failed. What each answer means
 * (io_uring_enter.2, ERRORS):
 *
 *   -EINTR    a signal came first: nothing was done, enter again.
 *   -EAGAIN   the kernel could not allocate requests for now;
 *   -EBUSY    completions are backlogged (CQ overflow) and must be reaped
 *             before more is submitted (kernel commits 1d7bb1d50fb4 and
 *             ca0a26511c67): reap what has completed, then enter again. Inside
 *             a drain, which is reaping already, just enter again.
 *   -ETIME    (waits only) the timeout expired: handled by uring_wait.
 *   others    the ring can no longer be trusted. -EBADR: the kernel dropped
 *             completions (155bc9505dbd), so operations counted as in flight
 *             will never end and their ids never free; -EEXIST: a thread other
 *             than the loop's creator entered the SINGLE_ISSUER ring; the rest
 *             (-EBADF, -EFAULT, -EINVAL...) are bugs.
 *
 * A transient answer that lasts RIO_ENTER_TRIES calls, reaping between, is
 * treated like the others (so is one while reaping cannot progress, the event
 * array full and unable to grow: out of memory twice over). A failed loop prepares nothing more (get_sqe()
 * returns NULL), submits nothing more, and rio_reap returns the error: the
 * caller can only destroy it. */
static int enter_failed(rio_loop *l, int r, int tries)
{
    int transient = r == -EINTR || r == -EAGAIN || r == -EBUSY;
    if (transient && tries < RIO_ENTER_TRIES) {
        l->st.submit_retries++;
        if (r != -EINTR && !l->in_drain)
            drain(l);
        return 1;
    }
    l->st.submit_errors++;
    rio_fail(l, r);
    return 0;
}

/* Hand the prepared SQEs to the kernel: how many it took, or -errno once the
 * loop has failed. */
static int submit(rio_loop *l)
{
    for (int tries = 1; !l->failed; tries++) {
        int r = l->in_drain ? io_uring_submit(&l->ring) : io_uring_submit_and_get_events(&l->ring);
        if (r >= 0) {
            if (r > 0) {
                l->st.submits++;
                l->st.sqes += (uint64_t)r;
            }
            return r;
        }
        if (!enter_failed(l, r, tries))
            break;
    }
    return l->failed;
}

/* A free SQE, or NULL once the loop has failed: each caller then leaves its
 * work undone, and rio_reap reports the failure. */
static struct io_uring_sqe *get_sqe(rio_loop *l)
{
    struct io_uring_sqe *sqe = NULL;
    while (!l->failed && !(sqe = io_uring_get_sqe(&l->ring))) {
        /* SQ full: hand this chunk to the kernel. Drain the CQ only when it is
         * half full: draining earlier would complete the sends of this very
         * fan-out, and the next frame of the burst would go out alone instead
         * of queueing behind them and leaving coalesced. */
        int r = submit(l);
        if (r == 0) {
            /* A full SQ the kernel takes nothing from: never seen, but it must
             * not spin here. */
            l->st.submit_errors++;
            rio_fail(l, -EAGAIN);
        } else if (r > 0 && !l->in_drain &&
                 io_uring_cq_ready(&l->ring) > l->probe.cq_entries / 2) {
            drain(l);
        }
    }
    return l->failed ? NULL : sqe;
}

/* Name the connection's file by its table index when it has one. The prep
 * helpers reset sqe->flags, so this runs after them. */
static void target(struct io_uring_sqe *sqe, const conn *c, uint32_t id)
{
    if (c->fixed) {
        sqe->fd = (int)id;
        sqe->flags |= IOSQE_FIXED_FILE;
    }
}

/* One register call per connection, against an fget/fput per request. A
 * failed install only means this connection's requests name its fd. */
static void install_file(rio_loop *l, uint32_t id)
{
    conn *c = &l->conns[id];
    if (id < l->probe.fixed_files)
        c->fixed = io_uring_register_files_update(&l->ring, id, &c->fd, 1) == 1;
}

/* recv_armed is set before get_sqe(), which may drain: a re-arm served
 * there must see this one and not arm a second request on the socket. */
static void arm_accept(rio_loop *l, uint32_t id)
{
    conn *c = &l->conns[id];
    c->recv_armed = 1;
    struct io_uring_sqe *sqe = get_sqe(l);
    if (!sqe) {
        c->recv_armed = 0;      /* the loop failed */
        return;
    }
    io_uring_prep_multishot_accept(sqe, c->fd, NULL, NULL, SOCK_CLOEXEC);
    /* user_data: the listener's id and generation (see ud_pack) */
    io_uring_sqe_set_data64(sqe, ud_pack(OP_ACCEPT, c->gen, id));
    c->ops++;
}

static void arm_recv(rio_loop *l, uint32_t id)
{
    conn *c = &l->conns[id];
    c->recv_armed = 1;
    struct io_uring_sqe *sqe = get_sqe(l);
    if (!sqe) {
        c->recv_armed = 0;      /* the loop failed */
        return;
    }
    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    target(sqe, c, id);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = 0;
    /* user_data: the connection's id and generation */
    io_uring_sqe_set_data64(sqe, ud_pack(OP_RECV, c->gen, id));
    c->ops++;
}

static void return_buffer(rio_loop *l, uint32_t bid)
{
    uint32_t mask = io_uring_buf_ring_mask(l->p.buf_count);
    io_uring_buf_ring_add(l->br, l->bufs + (size_t)bid * l->p.buf_size, l->p.buf_size,
                          (unsigned short)bid, (int)mask, 0);
    io_uring_buf_ring_advance(l->br, 1);
}

static send_ctx *sc_get(rio_loop *l)
{
    if (l->nsc_free)
        return l->sc_free[--l->nsc_free];
    return malloc(sizeof(send_ctx));
}

static void sc_put(rio_loop *l, send_ctx *sc)
{
    if (l->nsc_free == l->sc_cap) {
        uint32_t cap = l->sc_cap ? l->sc_cap * 2 : 256;
        send_ctx **v = realloc(l->sc_free, cap * sizeof(*v));
        if (!v) {
            free(sc);
            return;
        }
        l->sc_free = v;
        l->sc_cap = cap;
    }
    l->sc_free[l->nsc_free++] = sc;
}

static int64_t zc_get(rio_loop *l)
{
    if (l->zc_free == RIO_NONE) {
        uint32_t old = l->zc_cap, cap = old ? old * 2 : 256;
        zc_rec *z = realloc(l->zc, cap * sizeof(*z));
        if (!z)
            return -1;
        for (uint32_t i = old; i < cap; i++)
            z[i].next_free = i + 1 < cap ? i + 1 : RIO_NONE;
        l->zc = z;
        l->zc_cap = cap;
        l->zc_free = old;
    }
    uint32_t i = l->zc_free;
    l->zc_free = l->zc[i].next_free;
    return i;
}

static void zc_put(rio_loop *l, uint32_t i)
{
    rio_slot_unref(l, l->zc[i].slot);
    l->zc[i].next_free = l->zc_free;
    l->zc_free = i;
}

/* Zero-copy to a loopback peer always falls back to a copy (MSG_ZEROCOPY
 * doc, "Loopback"), and only adds a notification per send. */
static int peer_is_loopback(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127;
    if (ss.ss_family == AF_INET6) {
        const struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) ||
               (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return 1;   /* AF_UNIX and the like: local */
}

static int zc_eligible(rio_loop *l, conn *c)
{
    if (!l->probe.zc_enabled || c->zc_off)
        return 0;
    qent *e = &c->q[c->qhead & (c->qcap - 1)];
    if (!rio_slot_in_arena(l, e->slot) || e->len - e->off < l->p.zc_threshold)
        return 0;
    if (c->zc_unchecked) {
        /* Asked here, not at accept: a storm's connections send small frames
         * (if any), and a system call per accept for nothing adds up. */
        c->zc_unchecked = 0;
        if (peer_is_loopback(c->fd)) {
            c->zc_off = 1;  /* the kernel would copy: don't try */
            return 0;
        }
    }
    return 1;
}

/* Start a send for everything queued, if none is in flight. */
static void uring_kick(rio_loop *l, uint32_t id)
{
    conn *c = &l->conns[id];
    if (c->sending || !c->qlen || c->send_broken || c->state == CS_CLOSING)
        return;
    struct io_uring_sqe *sqe = get_sqe(l);
    if (!sqe)
        return;             /* the loop failed: the queue stays as it is */
    int flags = MSG_NOSIGNAL | MSG_WAITALL;
    int64_t z;
    if (zc_eligible(l, c) && (z = zc_get(l)) >= 0) {
        qent *e = &c->q[c->qhead & (c->qcap - 1)];
        slot *s = &l->slots[e->slot];
        s->refs++;          /* held until the notification CQE */
        l->zc[z] = (zc_rec){.slot = e->slot, .conn = id, .gen = c->gen, .next_free = RIO_NONE};
        io_uring_prep_send_zc_fixed(sqe, c->fd, s->data + e->off, e->len - e->off, flags, 0, 0);
        target(sqe, c, id);
        sqe->ioprio |= IORING_SEND_ZC_REPORT_USAGE;
        /* user_data: the zero-copy record, generation 0: the record itself
         * names the connection and its generation, and outlives both CQEs */
        io_uring_sqe_set_data64(sqe, ud_pack(OP_SENDZC, 0, (uint32_t)z));
        c->inflight = 1;
        c->send_zc = 1;
        l->st.zc_sends++;
    } else if (c->qlen == 1) {
        struct iovec v;
        rio_fill_iov(l, c, &v, 1);
        io_uring_prep_send(sqe, c->fd, v.iov_base, v.iov_len, flags);
        target(sqe, c, id);
        /* user_data: the connection's id and generation */
        io_uring_sqe_set_data64(sqe, ud_pack(OP_SEND, c->gen, id));
        c->inflight = 1;
    } else {
        send_ctx *sc = sc_get(l);
        if (!sc) {
            /* No memory for an iovec: send the head alone. */
            struct iovec v;
            rio_fill_iov(l, c, &v, 1);
            io_uring_prep_send(sqe, c->fd, v.iov_base, v.iov_len, flags);
            target(sqe, c, id);
            c->inflight = 1;
        } else {
            memset(&sc->msg, 0, sizeof(sc->msg));
            sc->msg.msg_iov = sc->iov;
            sc->msg.msg_iovlen = rio_fill_iov(l, c, sc->iov, RIO_IOV_MAX);
            c->inflight = (uint32_t)sc->msg.msg_iovlen;
            c->sc = sc;
            io_uring_prep_sendmsg(sqe, c->fd, &sc->msg, flags);
            target(sqe, c, id);
            l->st.coalesced++;
        }
        /* user_data: the connection's id and generation (either send) */
        io_uring_sqe_set_data64(sqe, ud_pack(OP_SEND, c->gen, id));
    }
    c->sending = 1;
    c->ops++;
    l->st.sends++;
}

static void uring_flush(rio_loop *l)
{
    if (io_uring_sq_ready(&l->ring))
        submit(l);
}

static void finish_op(rio_loop *l, uint32_t id)
{
    conn *c = &l->conns[id];
    if (--c->ops == 0 && c->state == CS_CLOSING)
        rio_conn_free(l, id);
}

/* Closing a connection that has a table slot (the common case) makes no
 * system call of its own, which matters when 100,000 clients leave at once:
 * its SQEs go with the next submission.
 *   1. Cancel its requests by their user_data (a hash lookup each; cancelling
 *      by file would walk every pending request of the ring): the multishot
 *      recv, and a send in flight, which may be waiting on a full socket and
 *      would otherwise keep the socket alive while it holds the file (a
 *      shutdown() used to wake it, at the cost of a FIN and the peer's answer,
 *      on loopback paid here).
 *   2. Remove the slot (IORING_OP_CLOSE of a fixed file). With the last
 *      reference the socket closes: FIN, or RST when bytes were left unread.
 * SQEs are issued in order, so each cancel finds its request. The fd itself is
 * closed at once: no request names it (they all name the slot), and the table
 * keeps the socket until step 2. The id stays taken until the removal's CQE
 * (c->ops): a connection installed at this index before that would be removed
 * with it. */
static void close_fixed(rio_loop *l, uint32_t id)
{
    conn *c = &l->conns[id];
    c->ops++;   /* the removal's; also keeps the id while get_sqe() may drain */
    uint64_t owned[2];
    int n = 0;
    if (c->recv_armed)
        owned[n++] = ud_pack(OP_RECV, c->gen, id);
    if (c->sending)
        owned[n++] = ud_pack(OP_SEND, c->gen, id);     /* send or sendmsg */
    struct io_uring_sqe *sqe = NULL;
    for (int i = 0; i < n; i++) {
        if (!(sqe = get_sqe(l)))
            break;
        io_uring_prep_cancel64(sqe, owned[i], 0);
        io_uring_sqe_set_data64(sqe, ud_pack(OP_CANCEL, 0, 0));
    }
    if ((sqe = l->failed ? NULL : get_sqe(l))) {
        io_uring_prep_close_direct(sqe, id);
        io_uring_sqe_set_data64(sqe, ud_pack(OP_CLOSE, c->gen, id));
    } else {
        finish_op(l, id);   /* the loop failed: nothing will complete any more */
    }
    c->fixed = 0;
    close(c->fd);
    c->fd = -1;
}

static void uring_close(rio_loop *l, uint32_t id)
{
    conn *c = &l->conns[id];
    /* (A zero-copy send in flight is named by its record, not the connection:
     * the shutdown below wakes it.) Kernel >= 6.0, as the loop needs. */
    if (c->fixed && c->kind == CK_STREAM && !(c->sending && c->send_zc)) {
        close_fixed(l, id);
        return;
    }
    int fd = c->fd;
    c->ops++;   /* keep the id while get_sqe() may drain completions */
    struct io_uring_sqe *sqe = c->recv_armed ? get_sqe(l) : NULL;
    if (sqe) {
        /* The target is the multishot's own user_data (id and generation);
         * the cancel's is OP_CANCEL with index and generation 0: its CQE is
         * ignored, the cancelled request reports its end itself. (No SQE: the
         * loop failed, and nothing will complete any more.) */
        uint32_t op = c->kind == CK_LISTENER ? OP_ACCEPT : OP_RECV;
        io_uring_prep_cancel64(sqe, ud_pack(op, c->gen, id), 0);
        io_uring_sqe_set_data64(sqe, ud_pack(OP_CANCEL, 0, 0));
    }
    /* Every SQE naming this fd (or its table entry) goes to the kernel before
     * the number is freed. Requests already issued keep their own reference
     * to the file, so clearing the entry does not disturb them. */
    if (io_uring_sq_ready(&l->ring))
        submit(l);
    if (c->fixed) {
        /* (Should clearing fail, the table keeps the socket until this id's
         * next connection replaces the entry; shutdown() below still ends
         * the connection for the peer.) */
        int none = -1;
        io_uring_register_files_update(&l->ring, id, &none, 1);
        c->fixed = 0;
    }
    if (c->kind == CK_STREAM)
        shutdown(fd, SHUT_RDWR);        /* wakes a send stuck on a full socket */
    close(fd);
    c->fd = -1;
    finish_op(l, id);
}

static void on_send(rio_loop *l, uint32_t id, int res)
{
    conn *c = &l->conns[id];
    uint64_t want = 0;
    for (uint32_t i = 0; i < c->inflight; i++) {
        qent *e = &c->q[(c->qhead + i) & (c->qcap - 1)];
        want += e->len - e->off;
    }
    c->sending = 0;
    c->send_zc = 0;
    if (c->sc) {
        sc_put(l, c->sc);
        c->sc = NULL;
    }
    c->inflight = 0;
    if (res > 0) {
        if ((uint64_t)res < want)
            l->st.short_sends++;
        rio_consume(l, id, (uint64_t)res);
    } else if (res == -EAGAIN || res == -EINTR || res == -ENOBUFS) {
        /* transient: try again below */
    } else {
        rio_send_failed(l, id, res ? -res : EPIPE);
    }
    if (c->state == CS_CLOSING) {
        rio_drop_queue(l, c);       /* closed while this send was in flight */
    } else if (c->state == CS_DRAINING && (!c->qlen || c->send_broken)) {
        rio_flushed(l, id);
    } else {
        uring_kick(l, id);
    }
    finish_op(l, id);
}

static void on_zc(rio_loop *l, struct io_uring_cqe *cqe)
{
    uint32_t z = ud_idx(cqe->user_data);
    zc_rec *r = &l->zc[z];
    if (cqe->flags & IORING_CQE_F_NOTIF) {
        if ((uint32_t)cqe->res & IORING_NOTIF_USAGE_ZC_COPIED) {
            /* The kernel copied anyway (always on loopback): zero-copy only
             * costs this peer an extra CQE, so stop using it for the peer. */
            l->st.zc_copied++;
            conn *c = &l->conns[r->conn];
            if (c->kind != CK_FREE && c->gen == r->gen && !l->p.zc_keep)
                c->zc_off = 1;
        }
        zc_put(l, z);
        return;
    }
    uint32_t id = r->conn;
    int more = cqe->flags & IORING_CQE_F_MORE;
    if (!more)
        zc_put(l, z);   /* no notification will follow */
    if (cqe->res == -EOPNOTSUPP)
        l->conns[id].zc_off = 1;
    on_send(l, id, cqe->res == -EOPNOTSUPP ? -EAGAIN : cqe->res);
}

/* Queue a receive to re-arm. An id is in the FIFO at most once, whatever
 * happens to its connection meanwhile: the check is made when it comes out. */
static void rearm_later(rio_loop *l, uint32_t id)
{
    if (l->rearm_mark[id])
        return;
    l->rearm_mark[id] = 1;
    l->rearm[(l->rearm_head + l->nrearm++) % l->p.max_conns] = id;
}

/* Re-arm ended receives, oldest first, no more of them than the ring has
 * buffers: with every buffer back that many can make progress at once, and
 * re-arming more only ends them with -ENOBUFS again (200 busy connections on
 * 8 buffers made 12.6 ENOBUFS completions per buffer filled). The rest wait
 * for the next drain, and uring_wait does not block while any are waiting. */
static void rearm_some(rio_loop *l)
{
    uint32_t budget = l->p.buf_count;
    while (l->nrearm && budget) {
        uint32_t id = l->rearm[l->rearm_head];
        l->rearm_head = (l->rearm_head + 1) % l->p.max_conns;
        l->nrearm--;
        l->rearm_mark[id] = 0;
        conn *c = &l->conns[id];
        /* (the id may belong to a newer connection by now: re-arm only what
         * has no receive and has not seen its end) */
        if (c->kind == CK_STREAM && c->state != CS_CLOSING && !c->recv_armed && !c->rd_closed) {
            l->st.rearms++;
            arm_recv(l, id);
            budget--;
        }
    }
}

static void on_recv(rio_loop *l, struct io_uring_cqe *cqe)
{
    uint32_t id = ud_idx(cqe->user_data);
    conn *c = &l->conns[id];
    int res = cqe->res;
    if (cqe->flags & IORING_CQE_F_BUFFER) {
        uint32_t bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        if (res > 0 && c->state == CS_OPEN && !c->rd_closed) {
            uint32_t room;
            char *dst = rio_data_reserve(l, &room);
            memcpy(dst, l->bufs + (size_t)bid * l->p.buf_size, (size_t)res);
            rio_data_commit(l, id, (uint32_t)res);
        }
        return_buffer(l, bid);
    }
    if (cqe->flags & IORING_CQE_F_MORE)
        return;
    c->recv_armed = 0;
    if (c->state == CS_OPEN || c->state == CS_LINGER || c->state == CS_DRAINING) {
        if (res == -ENOBUFS) {
            l->st.enobufs++;
            rearm_later(l, id);
        } else if (res > 0) {
            rearm_later(l, id);             /* ended for another reason (CQ overflow) */
        } else {
            c->rd_closed = 1;
            if (c->state == CS_LINGER)
                rio_hard_close(l, id);      /* the peer closed too: done */
            else
                rio_hup(l, id, -res);
        }
    }
    finish_op(l, id);
}

static void on_accept(rio_loop *l, struct io_uring_cqe *cqe)
{
    uint32_t lid = ud_idx(cqe->user_data);
    conn *lc = &l->conns[lid];
    int res = cqe->res;
    if (res >= 0) {
        int64_t id = rio_conn_alloc(l, res, CK_STREAM);
        if (id < 0) {
            close(res);
            l->st.refused++;
            rio_ev_put(l, RIO_EV_REFUSED, lid, 0, 0, 0);
        } else {
            /* (TCP_NODELAY: inherited from the listener, see rio_listen) */
            l->conns[id].zc_unchecked = !l->p.zc_loopback;  /* see zc_eligible */
            install_file(l, (uint32_t)id);
            arm_recv(l, (uint32_t)id);
            l->st.accepts++;
            rio_ev_put(l, RIO_EV_ACCEPT, (uint32_t)id, res, 0, lid);
        }
    }
    if (cqe->flags & IORING_CQE_F_MORE)
        return;
    lc->recv_armed = 0;
    if (lc->state == CS_OPEN) {
        if (res >= 0 || res == -EINTR || res == -ECONNABORTED) {
            l->st.rearms++;
            arm_accept(l, lid);
        } else {
            /* EMFILE, ENFILE, ENOMEM...: re-arming now would spin. The
             * caller resumes after a pause (rio_resume_accept). */
            lc->accept_paused = 1;
            rio_ev_put(l, RIO_EV_ACCEPT_ERROR, lid, -res, 0, 0);
        }
    }
    finish_op(l, lid);
}

static void handle_cqe(rio_loop *l, struct io_uring_cqe *cqe)
{
    uint64_t ud = cqe->user_data;
    uint32_t op = ud_op(ud);
    if (op == OP_CANCEL || op == 0)
        return;                     /* nothing to look up (see ud_pack) */
    if (op == OP_SENDZC) {
        on_zc(l, cqe);
        return;
    }
    uint32_t id = ud_idx(ud);
    if (id >= l->p.max_conns || !gen_matches(&l->conns[id], ud)) {
        /* Stale: the id was freed and reused. Give back a buffer it carried. */
        if (cqe->flags & IORING_CQE_F_BUFFER)
            return_buffer(l, cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        return;
    }
    switch (op) {
    case OP_RECV:
        on_recv(l, cqe);
        break;
    case OP_SEND:
        on_send(l, id, cqe->res);
        break;
    case OP_ACCEPT:
        on_accept(l, cqe);
        break;
    case OP_CLOSE:
        /* The slot is gone whatever res says (-EBADF: it was empty already). */
        finish_op(l, id);
        break;
    }
}

/* Room for what one more CQE may add: a receive buffer's bytes and
 * RIO_EV_PER_STEP events (see "events" in core.c). */
static int room_for_cqe(rio_loop *l)
{
    uint32_t room;
    rio_data_reserve(l, &room);
    if (room < l->p.buf_size)
        return 0;
    if (rio_ev_reserve(l, RIO_EV_PER_STEP) < 0) {
        l->st.events_deferred++;
        return 0;
    }
    return 1;
}

/* Drain ready CQEs in batches; stop early while the batch cannot take one
 * more CQE's data or events (the rest wait in the CQ for the next reap).
 * Returns how many it handled. */
static unsigned drain(rio_loop *l)
{
    struct io_uring_cqe *cqe;
    unsigned head, n, total = 0;
    int room = 1;
    l->in_drain = 1;
    do {
        n = 0;
        io_uring_for_each_cqe(&l->ring, head, cqe) {
            if (!(room = room_for_cqe(l)))
                break;
            handle_cqe(l, cqe);
            n++;
        }
        io_uring_cq_advance(&l->ring, n);
        l->st.cqes += n;
        total += n;
    } while (n && room);
    rearm_some(l);      /* buffers are back in the ring */
    l->in_drain = 0;
    return total;
}

/* A DEFER_TASKRUN ring completes a receive in task_work that runs only inside
 * io_uring_enter, and since 6.13 one enter runs at most 20 items a pass, two
 * passes (IO_LOCAL_TW_DEFAULT_MAX): 300 sockets with data took 15 reaps to
 * read, and anything that judged silence in between (heartbeats, a handshake's
 * deadline) judged bytes that had arrived as missing. An enter that completed
 * this many or more may have left work behind; one that completed fewer ran out. */
#define TW_PASS_MAX 20
#define ENTERS_PER_WAIT 64      /* bounds one wait: ~2,500 receives */

/* Wait for completions (or not, timeout_ms 0), then process them and submit
 * what that prepared. 0, or -errno once the loop has failed. */
static int uring_wait(rio_loop *l, int timeout_ms)
{
    struct io_uring_cqe *cqe = NULL;
    int r;
    if (l->nrearm)
        timeout_ms = 0;     /* receives wait to be re-armed: come back at once */
    if (timeout_ms == 0) {
        r = io_uring_submit_and_get_events(&l->ring);
    } else if (timeout_ms < 0) {
        r = io_uring_submit_and_wait(&l->ring, 1);
    } else {
        struct __kernel_timespec ts = {.tv_sec = timeout_ms / 1000,
                                       .tv_nsec = (long long)(timeout_ms % 1000) * 1000000};
        r = io_uring_submit_and_wait_timeout(&l->ring, &cqe, 1, &ts, NULL);
    }
    if (r > 0) {
        l->st.submits++;
        l->st.sqes += (uint64_t)r;
    }
    /* -ETIME is the timeout. The transient errors are not retried here: a
     * wait ends on them, the drain below reaps what completed and the caller's
     * next reap enters again; -EINTR above all must return to Python, which
     * runs signal handlers only between C calls. */
    if (r < 0 && r != -ETIME && !enter_failed(l, r, 1))
        return l->failed;
    unsigned got = drain(l);
    /* More task_work may wait behind a full pass: enter again (nothing to wait
     * for) while the last enter completed a pass's worth and there is room. */
    for (int i = 1; i < ENTERS_PER_WAIT && got >= TW_PASS_MAX && !l->failed &&
                    !io_uring_cq_ready(&l->ring); i++) {
        r = io_uring_get_events(&l->ring);
        if (r < 0) {
            if (!enter_failed(l, r, 1))
                return l->failed;
            break;      /* transient (-EINTR above all): back to the caller */
        }
        got = drain(l);
    }
    /* Completions drain() had no room for, receives waiting to be re-armed, and
     * task_work an enter may have left hold bytes that have arrived unread. */
    l->behind = io_uring_cq_ready(&l->ring) > 0 || l->nrearm > 0 || got >= TW_PASS_MAX;
    uring_flush(l);
    return l->failed;
}

/* These three return -errno if the loop has failed (nothing was armed). */
static int uring_listen(rio_loop *l, uint32_t id)
{
    arm_accept(l, id);
    uring_flush(l);
    return l->failed;
}

static int uring_adopt(rio_loop *l, uint32_t id)
{
    install_file(l, id);
    arm_recv(l, id);
    uring_flush(l);
    return l->failed;
}

static int uring_resume_accept(rio_loop *l, uint32_t id)
{
    if (!l->conns[id].recv_armed)
        arm_accept(l, id);
    uring_flush(l);
    return l->failed;
}

static void uring_destroy(rio_loop *l)
{
    if (l->ring_ok)
        io_uring_queue_exit(&l->ring);
    for (uint32_t i = 0; i < l->nsc_free; i++)
        free(l->sc_free[i]);
    for (uint32_t i = 0; l->conns && i < l->p.max_conns; i++)
        free(l->conns[i].sc);
    free(l->sc_free);
    free(l->zc);
    free(l->br);
    free(l->bufs);
    free(l->rearm);
    free(l->rearm_mark);
}

static void kernel_version(int *major, int *minor)
{
    struct utsname u;
    *major = *minor = 0;
    if (uname(&u) == 0) {
        char *end;
        *major = (int)strtol(u.release, &end, 10);
        if (*end == '.')
            *minor = (int)strtol(end + 1, NULL, 10);
    }
}

/* Flags dropped one by one, in this order, while io_uring_setup says EINVAL. */
static const uint32_t fallback_order[] = {
    IORING_SETUP_DEFER_TASKRUN, IORING_SETUP_SINGLE_ISSUER, IORING_SETUP_COOP_TASKRUN,
    IORING_SETUP_SUBMIT_ALL, IORING_SETUP_CLAMP, IORING_SETUP_CQSIZE,
};

int rio_uring_open(rio_loop *l, int *stage)
{
    rio_probe *pr = &l->probe;
    kernel_version(&pr->kernel_major, &pr->kernel_minor);
    int kv = pr->kernel_major * 100 + pr->kernel_minor;
    *stage = RIO_STAGE_KERNEL;
    if (kv < 600)
        return -ENOSYS;     /* multishot recv needs 6.0 */

    *stage = RIO_STAGE_SETUP;
    struct io_uring_params params;
    uint32_t flags = l->p.setup_flags | IORING_SETUP_CQSIZE;
    int rc;
    for (size_t i = 0;; i++) {
        memset(&params, 0, sizeof(params));
        params.flags = flags;
        params.cq_entries = l->p.cq_entries;
        rc = io_uring_queue_init_params(l->p.sq_entries, &l->ring, &params);
        if (rc != -EINVAL || i == sizeof(fallback_order) / sizeof(fallback_order[0]))
            break;
        flags &= ~fallback_order[i];
    }
    if (rc < 0)
        return rc;
    l->ring_ok = 1;
    pr->setup_flags = flags;
    pr->features = params.features;
    pr->sq_entries = params.sq_entries;
    pr->cq_entries = params.cq_entries;
    pr->ring_fd_registered = io_uring_register_ring_fd(&l->ring) == 1;

    struct io_uring_probe *probe = io_uring_get_probe_ring(&l->ring);
    if (probe) {
        pr->has_send_zc = io_uring_opcode_supported(probe, IORING_OP_SEND_ZC);
        io_uring_free_probe(probe);
    }
    pr->has_recv_multishot = kv >= 600;
    pr->has_accept_multishot = kv >= 519;

    /* The shared provided-buffer ring (liburing 2.3 has no setup_buf_ring). */
    *stage = RIO_STAGE_MEMORY;
    size_t ring_bytes = (size_t)l->p.buf_count * sizeof(struct io_uring_buf);
    if (posix_memalign((void **)&l->br, 4096, ring_bytes < 4096 ? 4096 : ring_bytes))
        return -ENOMEM;
    l->bufs = malloc((size_t)l->p.buf_count * l->p.buf_size);
    l->rearm = malloc((size_t)l->p.max_conns * sizeof(uint32_t));
    l->rearm_mark = calloc(l->p.max_conns, 1);
    if (!l->bufs || !l->rearm || !l->rearm_mark)
        return -ENOMEM;
    *stage = RIO_STAGE_BUFFER_RING;
    struct io_uring_buf_reg reg = {
        .ring_addr = (uint64_t)(uintptr_t)l->br, .ring_entries = l->p.buf_count, .bgid = 0};
    rc = io_uring_register_buf_ring(&l->ring, &reg, 0);
    if (rc < 0)
        return rc;
    io_uring_buf_ring_init(l->br);
    uint32_t mask = io_uring_buf_ring_mask(l->p.buf_count);
    for (uint32_t i = 0; i < l->p.buf_count; i++)
        io_uring_buf_ring_add(l->br, l->bufs + (size_t)i * l->p.buf_size, l->p.buf_size,
                              (unsigned short)i, (int)mask, (int)i);
    io_uring_buf_ring_advance(l->br, (int)l->p.buf_count);

    /* The sparse file table (see the top of this file). Within the soft
     * RLIMIT_NOFILE, so liburing never raises the limit behind our back. */
    struct rlimit nofile;
    uint64_t nfiles = l->p.max_conns;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nfiles)
        nfiles = nofile.rlim_cur;
    if (nfiles > RIO_MAX_FIXED_FILES)
        nfiles = RIO_MAX_FIXED_FILES;
    /* Before 6.13 a file cleared from the table is released only once every
     * older resource node is, and a multishot recv holds its node for the
     * connection's life: one idle subscriber would keep every socket closed
     * after it allocated (liburing#1192). 6.13 gave each resource its own
     * node. */
    if (kv < 613)
        rc = -EOPNOTSUPP;
    else
        rc = nfiles ? io_uring_register_files_sparse(&l->ring, (unsigned)nfiles) : -EINVAL;
    pr->fixed_files = rc == 0 ? (uint32_t)nfiles : 0;
    pr->fixed_files_errno = rc < 0 ? -rc : 0;

    /* Register the arena for SEND_ZC; failure (RLIMIT_MEMLOCK) only turns
     * zero-copy off. */
    if (l->arena) {
        struct iovec iov = {.iov_base = l->arena,
                            .iov_len = (size_t)l->arena_chunks * RIO_CHUNK};
        rc = io_uring_register_buffers(&l->ring, &iov, 1);
        pr->arena_registered = rc == 0;
        pr->arena_errno = rc < 0 ? -rc : 0;
    }
    pr->zc_enabled = pr->has_send_zc && pr->arena_registered && kv >= 610 &&
                     l->p.zc_threshold > 0;
    return 0;
}

const engine_ops rio_uring_ops = {
    .listen = uring_listen,
    .adopt = uring_adopt,
    .resume_accept = uring_resume_accept,
    .kick = uring_kick,
    .flush = uring_flush,
    .close = uring_close,
    .wait = uring_wait,
    .destroy = uring_destroy,
};
