/* The C half of bench/ringio_fanout.py, compiled at run time with cffi (API mode).
 *
 * px: the plain sender, send() per connection per frame, waiting for EPOLLOUT on a
 * socket that refuses. rx: the receiver process's drain loop, which acknowledges a
 * round once every connection has all of it. The declarations cffi sees are
 * C_DECLS in ringio_fanout.py; keep the two in step.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the plain sender: send() per connection per frame ----------------- */

typedef struct px {
    int epfd, ackfd, n;
    int *fds;
    uint64_t *sent;             /* bytes of this round sent, per fd */
    uint8_t *blocked;           /* waiting for EPOLLOUT */
    uint64_t sends, eagain, partial, waits, ctls, acks;
} px;

px *px_new(const int *fds, int n, int ackfd)
{
    px *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->n = n;
    p->ackfd = ackfd;
    p->fds = malloc(sizeof(int) * (size_t)n);
    p->sent = calloc((size_t)n, sizeof(uint64_t));
    p->blocked = calloc((size_t)n, 1);
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!p->fds || !p->sent || !p->blocked || p->epfd < 0)
        goto fail;
    memcpy(p->fds, fds, sizeof(int) * (size_t)n);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)n};
    if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, ackfd, &ev) < 0)
        goto fail;
    return p;
fail:
    if (p->epfd >= 0)
        close(p->epfd);
    free(p->fds);
    free(p->sent);
    free(p->blocked);
    free(p);
    return NULL;
}

void px_free(px *p)
{
    if (!p)
        return;
    close(p->epfd);
    free(p->fds);
    free(p->sent);
    free(p->blocked);
    free(p);
}

void px_counters(px *p, uint64_t out[6])
{
    out[0] = p->sends;
    out[1] = p->eagain;
    out[2] = p->partial;
    out[3] = p->waits;
    out[4] = p->ctls;
    out[5] = p->acks;
}

static int px_block(px *p, int i)
{
    struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)i};
    p->blocked[i] = 1;
    p->ctls++;
    return epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->fds[i], &ev) < 0 ? -errno : 0;
}

/* One round: `frames` frames of `len` bytes (contiguous in buf), frame by
 * frame, each to every fd; then wait until the receiver acknowledges the
 * round, finishing refused sockets on EPOLLOUT. 0, or -errno. */
int px_round(px *p, const char *buf, uint32_t len, uint32_t frames, int timeout_ms)
{
    const uint64_t total = (uint64_t)len * frames;
    const int flags = MSG_DONTWAIT | MSG_NOSIGNAL;
    memset(p->sent, 0, sizeof(uint64_t) * (size_t)p->n);
    for (uint32_t f = 0; f < frames; f++) {
        uint64_t end = (uint64_t)len * (f + 1);
        for (int i = 0; i < p->n; i++) {
            if (p->blocked[i])
                continue;       /* its frames wait for EPOLLOUT */
            ssize_t w = send(p->fds[i], buf + p->sent[i], end - p->sent[i], flags);
            p->sends++;
            if (w < 0) {
                if (errno != EAGAIN)
                    return -errno;
                p->eagain++;
            } else {
                p->sent[i] += (uint64_t)w;
                if (p->sent[i] == end)
                    continue;
                p->partial++;
            }
            int rc = px_block(p, i);
            if (rc < 0)
                return rc;
        }
    }
    int64_t deadline = now_ms() + timeout_ms;
    struct epoll_event evs[512];
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        int k = epoll_wait(p->epfd, evs, 512, (int)left);
        p->waits++;
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        for (int j = 0; j < k; j++) {
            uint32_t i = evs[j].data.u32;
            if (i == (uint32_t)p->n) {
                char b[64];
                ssize_t r = read(p->ackfd, b, sizeof(b));
                if (r <= 0)
                    return r == 0 ? -EPIPE : -errno;
                p->acks += (uint64_t)r;
                return 0;       /* the receiver has the whole round */
            }
            ssize_t w = send(p->fds[i], buf + p->sent[i], total - p->sent[i], flags);
            p->sends++;
            if (w < 0) {
                if (errno != EAGAIN)
                    return -errno;
                p->eagain++;
                continue;
            }
            p->sent[i] += (uint64_t)w;
            if (p->sent[i] < total) {
                p->partial++;
                continue;
            }
            p->blocked[i] = 0;
            p->ctls++;
            epoll_ctl(p->epfd, EPOLL_CTL_DEL, p->fds[i], NULL);
        }
    }
}

/* ---- the receiver: drain every socket, acknowledge complete rounds ----- */

#define RX_BUF (256 * 1024)

typedef struct rx rx;
void rx_free(rx *r);

typedef struct rx {
    int epfd, n;
    int *fds;
    uint64_t *got;
    char *buf;
} rx;

rx *rx_new(const int *fds, int n)
{
    rx *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->n = n;
    r->fds = malloc(sizeof(int) * (size_t)n);
    r->got = calloc((size_t)n, sizeof(uint64_t));
    r->buf = malloc(RX_BUF);
    r->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!r->fds || !r->got || !r->buf || r->epfd < 0) {
        rx_free(r);
        return NULL;
    }
    memcpy(r->fds, fds, sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++) {
        int fl = fcntl(fds[i], F_GETFL);
        fcntl(fds[i], F_SETFL, fl | O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, fds[i], &ev) < 0) {
            rx_free(r);
            return NULL;
        }
    }
    return r;
}

void rx_free(rx *r)
{
    if (!r)
        return;
    if (r->epfd >= 0)
        close(r->epfd);
    free(r->fds);
    free(r->got);
    free(r->buf);
    free(r);
}

/* Count bytes per socket; each time every socket has per_round more bytes,
 * write one byte to ackfd. Returns the bytes received when ctlfd becomes
 * readable (the sender's stop), or -errno (-ETIMEDOUT after idle_ms idle,
 * -EPIPE if a sender socket closed). */
int64_t rx_run(rx *r, uint64_t per_round, int ackfd, int ctlfd, int idle_ms, uint64_t *rounds)
{
    uint64_t target = per_round, total = 0;
    int reached = 0;
    int64_t rc = 0;
    *rounds = 0;
    memset(r->got, 0, sizeof(uint64_t) * (size_t)r->n);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)r->n};
    if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, ctlfd, &ev) < 0)
        return -errno;
    struct epoll_event evs[1024];
    for (;;) {
        int k = epoll_wait(r->epfd, evs, 1024, idle_ms);
        if (k == 0) {
            rc = -ETIMEDOUT;
            break;
        }
        if (k < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            break;
        }
        int stop = 0;
        for (int j = 0; j < k; j++) {
            uint32_t i = evs[j].data.u32;
            if (i == (uint32_t)r->n) {
                stop = 1;
                continue;
            }
            for (int reads = 0; reads < 4; reads++) {
                ssize_t got = recv(r->fds[i], r->buf, RX_BUF, MSG_DONTWAIT);
                if (got < 0 && (errno == EAGAIN || errno == EINTR))
                    break;
                if (got <= 0) {
                    rc = got == 0 ? -EPIPE : -errno;
                    goto out;
                }
                uint64_t before = r->got[i];
                r->got[i] += (uint64_t)got;
                total += (uint64_t)got;
                if (before < target && r->got[i] >= target)
                    reached++;
            }
        }
        while (reached == r->n) {
            if (write(ackfd, "a", 1) != 1) {
                rc = -errno;
                goto out;
            }
            (*rounds)++;
            target += per_round;
            reached = 0;
            for (int i = 0; i < r->n; i++)
                reached += r->got[i] >= target;
        }
        if (stop) {
            rc = (int64_t)total;
            break;
        }
    }
out:
    epoll_ctl(r->epfd, EPOLL_CTL_DEL, ctlfd, NULL);
    return rc;
}
