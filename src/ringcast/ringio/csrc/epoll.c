/* The epoll engine: the same loop where io_uring is unavailable (blocked by a
 * container's seccomp profile, by kernel.io_uring_disabled, or an old kernel).
 *
 * Readiness instead of completion: sockets are non-blocking, level-triggered
 * for reading; a send is written at once and only what the socket refuses
 * stays queued, with EPOLLOUT armed until the queue is empty. Queues, slots,
 * caps and events are the core's, so callers see no difference.
 */
#include "ringio.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#define EPOLL_BATCH 1024
#define READ_PER_WAKE (256 * 1024)  /* fairness: bytes read per socket per wake */
#define ACCEPT_PER_WAKE 256

static uint32_t wanted(conn *c);

/* Every registration is level-triggered: a ready socket left alone (the event
 * or data batch is full) is reported again by the next epoll_wait. Its data
 * packs [generation:32][id:32], so an event for a freed and reused id is
 * recognised and skipped. */
static int set_events(rio_loop *l, uint32_t id, uint32_t events, int op)
{
    conn *c = &l->conns[id];
    struct epoll_event ev = {.events = events, .data.u64 = ((uint64_t)c->gen << 32) | id};
    return epoll_ctl(l->epfd, op, c->fd, &ev) < 0 ? -errno : 0;
}

/* Change what a stream waits for. EPOLLHUP and EPOLLERR cannot be masked, so a
 * socket with nothing left to wait for (EOF seen, nothing to send) leaves the
 * epoll set altogether; otherwise a reset peer would wake every epoll_wait. */
static void rewatch(rio_loop *l, uint32_t id)
{
    conn *c = &l->conns[id];
    uint32_t ev = wanted(c);
    if (!ev) {
        if (c->recv_armed)
            epoll_ctl(l->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        c->recv_armed = 0;
        return;
    }
    set_events(l, id, ev, c->recv_armed ? EPOLL_CTL_MOD : EPOLL_CTL_ADD);
    c->recv_armed = 1;
}

static uint32_t wanted(conn *c)
{
    uint32_t ev = 0;
    if (!c->rd_closed)
        ev |= EPOLLIN | EPOLLRDHUP;
    if (c->sending)
        ev |= EPOLLOUT;
    return ev;
}

static void epoll_close(rio_loop *l, uint32_t id)
{
    conn *c = &l->conns[id];
    if (c->recv_armed || c->kind == CK_LISTENER)
        epoll_ctl(l->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    rio_conn_free(l, id);
}

/* Write as much of the queue as the socket takes. */
static void write_queue(rio_loop *l, uint32_t id)
{
    conn *c = &l->conns[id];
    if (c->kind != CK_STREAM || c->state == CS_CLOSING)
        return;
    struct iovec iov[RIO_IOV_MAX];
    while (c->qlen && !c->send_broken) {
        uint32_t n = rio_fill_iov(l, c, iov, RIO_IOV_MAX);
        ssize_t w;
        if (n == 1) {       /* the common case: plain send(), cheaper than sendmsg() */
            w = send(c->fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL | MSG_DONTWAIT);
        } else {
            struct msghdr msg = {.msg_iov = iov, .msg_iovlen = n};
            w = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        }
        l->st.sends++;
        if (n > 1)
            l->st.coalesced++;
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                rio_send_failed(l, id, errno);
            break;
        }
        uint64_t want = 0;
        for (uint32_t i = 0; i < n; i++)
            want += iov[i].iov_len;
        rio_consume(l, id, (uint64_t)w);
        if ((uint64_t)w < want) {
            l->st.short_sends++;
            break;      /* the socket is full */
        }
    }
    uint8_t sending = c->qlen && !c->send_broken;
    if (sending != c->sending) {
        c->sending = sending;
        rewatch(l, id);
    }
    if (c->state == CS_DRAINING && (!c->qlen || c->send_broken))
        rio_flushed(l, id);
}

/* New frames queued: write now unless the socket is already known to be full
 * (EPOLLOUT armed), in which case the frames wait for writability. */
static void epoll_kick(rio_loop *l, uint32_t id)
{
    if (!l->conns[id].sending)
        write_queue(l, id);
}

static void epoll_flush(rio_loop *l)
{
    (void)l;
}

static void on_readable(rio_loop *l, uint32_t id)
{
    conn *c = &l->conns[id];
    uint32_t got = 0;
    while (got < READ_PER_WAKE && c->state != CS_CLOSING) {
        uint32_t room;
        char *dst = rio_data_reserve(l, &room);
        if (room < l->p.buf_size)
            return;     /* level-triggered: the rest is read on the next reap */
        if (rio_ev_reserve(l, 1) < 0) {
            l->st.events_deferred++;
            return;     /* no room for the DATA event: likewise */
        }
        ssize_t r = recv(c->fd, dst, l->p.buf_size, MSG_DONTWAIT);
        if (r > 0) {
            if (c->state == CS_OPEN)    /* else closing: read and discard */
                rio_data_commit(l, id, (uint32_t)r);
            got += (uint32_t)r;
            /* Less than asked for: the socket is most likely empty now, and the
             * recv that would say so (EAGAIN) is a system call per event saved
             * (level-triggered: whatever arrives meanwhile is reported again). */
            if ((uint32_t)r < l->p.buf_size)
                return;
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        c->rd_closed = 1;
        if (c->state == CS_LINGER) {
            rio_hard_close(l, id);      /* the peer closed too: done */
            return;
        }
        int err = r == 0 ? 0 : errno;
        rewatch(l, id);
        rio_hup(l, id, err);
        return;
    }
}

static void on_acceptable(rio_loop *l, uint32_t lid)
{
    conn *lc = &l->conns[lid];
    for (int i = 0; i < ACCEPT_PER_WAKE; i++) {
        /* Each turn reports one event (ACCEPT, REFUSED or ACCEPT_ERROR): without
         * room for it, the connection waits in the backlog for the next reap. */
        if (rio_ev_reserve(l, 1) < 0) {
            l->st.events_deferred++;
            return;
        }
        int fd = accept4(lc->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            if (err == EAGAIN || err == EINTR || err == ECONNABORTED)
                return;
            lc->accept_paused = 1;
            set_events(l, lid, 0, EPOLL_CTL_MOD);
            rio_ev_put(l, RIO_EV_ACCEPT_ERROR, lid, err, 0, 0);
            return;
        }
        int64_t id = rio_conn_alloc(l, fd, CK_STREAM);
        if (id < 0) {
            close(fd);
            l->st.refused++;
            rio_ev_put(l, RIO_EV_REFUSED, lid, 0, 0, 0);
            continue;
        }
        l->conns[id].recv_armed = 1;     /* (TCP_NODELAY: from the listener) */
        if (set_events(l, (uint32_t)id, EPOLLIN | EPOLLRDHUP, EPOLL_CTL_ADD) < 0) {
            l->conns[id].fd = -1;
            rio_conn_free(l, (uint32_t)id);
            close(fd);
            continue;
        }
        l->st.accepts++;
        rio_ev_put(l, RIO_EV_ACCEPT, (uint32_t)id, fd, 0, lid);
    }
}

static int epoll_wait_events(rio_loop *l, int timeout_ms)
{
    struct epoll_event evs[EPOLL_BATCH];
    int n = epoll_wait(l->epfd, evs, EPOLL_BATCH, timeout_ms);
    if (n < 0) {
        int err = errno;
        if (err == EINTR)
            return 0;       /* back to Python, which runs signal handlers */
        l->st.submit_errors++;
        return -err;        /* EBADF, EFAULT, EINVAL: bugs; the loop fails */
    }
    l->st.cqes += (uint64_t)n;
    /* A full batch may have left ready sockets for the next wait. */
    l->behind = n == EPOLL_BATCH;
    for (int i = 0; i < n; i++) {
        if (rio_ev_reserve(l, RIO_EV_PER_STEP) < 0) {
            l->st.events_deferred++;
            l->behind = 1;
            break;      /* the rest stay ready for the next reap (level-triggered) */
        }
        uint32_t id = (uint32_t)evs[i].data.u64, gen = (uint32_t)(evs[i].data.u64 >> 32);
        conn *c = &l->conns[id];
        if (c->kind == CK_FREE || c->gen != gen || c->state == CS_CLOSING)
            continue;
        if (c->kind == CK_LISTENER) {
            on_acceptable(l, id);
            continue;
        }
        if (c->sending && (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            write_queue(l, id);     /* a dead peer makes the send fail: rewatch */
        if (c->kind == CK_STREAM && c->state != CS_CLOSING && !c->rd_closed &&
            (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
            on_readable(l, id);
    }
    return 0;
}

static int nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ? -errno : 0;
}

static int epoll_listen(rio_loop *l, uint32_t id)
{
    int rc = nonblocking(l->conns[id].fd);
    return rc < 0 ? rc : set_events(l, id, EPOLLIN, EPOLL_CTL_ADD);
}

static int epoll_adopt(rio_loop *l, uint32_t id)
{
    int rc = nonblocking(l->conns[id].fd);
    if (rc < 0)
        return rc;
    l->conns[id].recv_armed = 1;
    return set_events(l, id, EPOLLIN | EPOLLRDHUP, EPOLL_CTL_ADD);
}

static int epoll_resume_accept(rio_loop *l, uint32_t id)
{
    return set_events(l, id, EPOLLIN, EPOLL_CTL_MOD);
}

static void epoll_destroy(rio_loop *l)
{
    if (l->epfd >= 0)
        close(l->epfd);
}

int rio_epoll_open(rio_loop *l, int *stage)
{
    *stage = RIO_STAGE_EPOLL;
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    return l->epfd < 0 ? -errno : 0;
}

const engine_ops rio_epoll_ops = {
    .listen = epoll_listen,
    .adopt = epoll_adopt,
    .resume_accept = epoll_resume_accept,
    .kick = epoll_kick,
    .flush = epoll_flush,
    .close = epoll_close,
    .wait = epoll_wait_events,
    .destroy = epoll_destroy,
};
