/* ringio core: the id table, refcounted slots, per-connection send queues and
 * the event batch. Nothing here makes a system call on a socket; the engines
 * (uring.c, epoll.c) do that. */
#include "ringio.h"

#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* ---- events ------------------------------------------------------------
 *
 * No event may vanish. An ACCEPT nobody sees leaks a connection (its fd and
 * its id), a lost DATA corrupts a stream, a lost HUP leaves a dead peer
 * subscribed, a lost CLOSED keeps an id the caller waits for. The event array
 * grows as needed, so it is full only when realloc fails (or at event_limit,
 * which tests set to take these paths). Then nothing is dropped; what would
 * have made the event waits instead, in one of two ways:
 *
 *  - Work a reap does (a CQE, a ready socket) is not started. Before each
 *    step the engine reserves room for RIO_EV_PER_STEP events and stops when
 *    it cannot; the rest stays in the CQ, or ready in the level-triggered
 *    epoll set, for the next reap, which has room again once the caller has
 *    taken this one's events. (The same as when the data buffer is full.)
 *    rio_ev_put() relies on that reservation.
 *  - HUP, OVERFLOW and CLOSED also happen outside a reap, in a fan-out or a
 *    close, where nothing can be put off. The connection holds them
 *    (conn.owes, in the FIFO l->owed: both allocated up front, so holding
 *    never allocates) and the next reap reports them before anything else.
 *    The id is not reused while it owes anything, and once a connection owes
 *    an event its later ones wait behind it, so they keep their order: no
 *    CLOSED overtakes the HUP before it.
 *
 * Each occurrence counts in st.events_deferred.
 */

/* Room for n more events, or -ENOMEM when the array cannot grow. */
int rio_ev_reserve(rio_loop *l, uint32_t n)
{
    uint32_t need = l->nev + n;
    if (need <= l->evcap)
        return 0;
    uint32_t limit = l->p.event_limit ? l->p.event_limit : UINT32_MAX / sizeof(rio_event);
    if (need > limit)
        return -ENOMEM;
    uint32_t cap = l->evcap * 2 > need ? l->evcap * 2 : need;
    if (cap > limit)
        cap = limit;
    rio_event *ev = realloc(l->ev, (size_t)cap * sizeof(*ev));
    if (!ev)
        return -ENOMEM;
    l->ev = ev;
    l->evcap = cap;
    return 0;
}

/* Append an event to the room rio_ev_reserve() made. */
void rio_ev_put(rio_loop *l, uint32_t kind, uint32_t id, int32_t res,
                uint32_t len, uint64_t aux)
{
    if (l->nev == l->evcap)
        abort();        /* a caller skipped rio_ev_reserve(): a bug, never a state */
    l->ev[l->nev++] = (rio_event){.kind = kind, .conn = id, .res = res, .len = len, .aux = aux};
}

static const uint32_t owed_kind[] = {
    [OWE_OVERFLOW] = RIO_EV_OVERFLOW, [OWE_HUP] = RIO_EV_HUP, [OWE_CLOSED] = RIO_EV_CLOSED,
};

/* A connection's OVERFLOW (aux: bytes queued), HUP (res: errno) or CLOSED:
 * reported now, or held by the connection (see above). */
static void ev_conn(rio_loop *l, uint32_t id, uint8_t what, int32_t res, uint64_t aux)
{
    conn *c = &l->conns[id];
    if (!c->owes && rio_ev_reserve(l, 1) == 0) {
        rio_ev_put(l, owed_kind[what], id, res, 0, aux);
        return;
    }
    if (!c->owes)
        l->owed[(l->owed_head + l->nowed++) % l->p.max_conns] = id;
    c->owes |= what;
    if (what == OWE_HUP)
        c->owed_err = res;
    else if (what == OWE_OVERFLOW)
        c->owed_queued = aux;
    l->st.events_deferred++;
}

static void release_id(rio_loop *l, uint32_t id);

/* Report what connections hold, oldest first, as far as there is room. */
static void pay_owed(rio_loop *l)
{
    while (l->nowed) {
        uint32_t id = l->owed[l->owed_head];
        conn *c = &l->conns[id];
        if (rio_ev_reserve(l, (uint32_t)__builtin_popcount(c->owes)) < 0)
            return;
        if (c->owes & OWE_OVERFLOW)
            rio_ev_put(l, RIO_EV_OVERFLOW, id, 0, 0, c->owed_queued);
        if (c->owes & OWE_HUP)
            rio_ev_put(l, RIO_EV_HUP, id, c->owed_err, 0, 0);
        if (c->owes & OWE_CLOSED)
            rio_ev_put(l, RIO_EV_CLOSED, id, 0, 0, 0);
        c->owes = 0;
        l->owed_head = (l->owed_head + 1) % l->p.max_conns;
        l->nowed--;
        if (c->kind == CK_FREE)
            release_id(l, id);      /* freed while it owed: reusable now */
    }
}

char *rio_data_reserve(rio_loop *l, uint32_t *room)
{
    *room = l->p.data_capacity - l->ndata;
    return l->data + l->ndata;
}

/* The loop's clock for heartbeats, in milliseconds (it wraps every 49 days:
 * compare with wrap-safe differences only). The coarse clock is a vDSO read of
 * the last tick: a few nanoseconds, and heartbeats need no better. */
static uint32_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

/* CLOCK_MONOTONIC in milliseconds: the caller's timeouts. */
static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* n bytes were copied to the reserved data; the DATA event's room is reserved
 * too (rio_ev_reserve). Any byte shows a heartbeat connection alive; bytes the
 * absorber takes whole (replies to heartbeats) make no event at all. */
void rio_data_commit(rio_loop *l, uint32_t id, uint32_t n)
{
    conn *c = &l->conns[id];
    l->st.recv_bytes += n;
    if (c->hb) {
        int waiting = c->hb_waiting;
        c->hb_rx = now_ms();
        c->hb_waiting = 0;
        if (c->hb_aligned && l->hb_absorb) {
            int aligned = 0;
            int reply = l->hb_absorb((const uint8_t *)l->data + l->ndata, n, &aligned);
            c->hb_aligned = (uint8_t)aligned;
            if (reply && waiting) {     /* the reply to our heartbeat; any other goes up */
                l->st.heartbeat_replies++;
                return;     /* the reserved room stays free; the bytes are overwritten */
            }
        }
    }
    rio_ev_put(l, RIO_EV_DATA, id, 0, n, l->ndata);
    l->ndata += n;
}

/* Drop what Python has seen; keep events produced since (a fan-out may drain
 * completions between two reaps). */
static void compact(rio_loop *l)
{
    uint32_t keep = l->nev - l->ev_returned;
    uint32_t dbase = l->data_returned;
    if (keep)
        memmove(l->ev, l->ev + l->ev_returned, keep * sizeof(rio_event));
    l->nev = keep;
    if (dbase) {
        memmove(l->data, l->data + dbase, l->ndata - dbase);
        l->ndata -= dbase;
        for (uint32_t i = 0; i < keep; i++)
            if (l->ev[i].kind == RIO_EV_DATA)
                l->ev[i].aux -= dbase;
    }
    l->ev_returned = 0;
    l->data_returned = 0;
}

/* ---- connection ids ---------------------------------------------------- */

int64_t rio_conn_alloc(rio_loop *l, int fd, int kind)
{
    uint32_t id = l->conn_free;
    if (id == RIO_NONE)
        return -ENFILE;
    conn *c = &l->conns[id];
    l->conn_free = c->next_free;
    uint32_t gen = c->gen;
    memset(c, 0, sizeof(*c));
    c->gen = gen;
    c->fd = fd;
    c->kind = (uint8_t)kind;
    c->state = CS_OPEN;
    c->next_free = RIO_NONE;
    l->st.conns_live++;
    return id;
}

static void release_id(rio_loop *l, uint32_t id)
{
    conn *c = &l->conns[id];
    c->next_free = l->conn_free;
    l->conn_free = id;
    l->st.conns_live--;
}

void rio_conn_free(rio_loop *l, uint32_t id)
{
    conn *c = &l->conns[id];
    int report = c->kind == CK_STREAM && c->closed_by_caller;
    c->inflight = 0;
    rio_drop_queue(l, c);   /* every reference goes back, whatever the path here */
    free(c->q);
    c->q = NULL;
    c->qcap = c->qlen = c->qhead = 0;
    c->kind = CK_FREE;
    c->fd = -1;
    c->gen++;
    if (report)
        ev_conn(l, id, OWE_CLOSED, 0, 0);
    if (!c->owes)
        release_id(l, id);
    /* else the id is held until pay_owed() has reported its events */
}

static conn *stream(rio_loop *l, uint32_t id)
{
    if (id >= l->p.max_conns)
        return NULL;
    conn *c = &l->conns[id];
    return c->kind == CK_FREE ? NULL : c;
}

/* ---- arena and slots --------------------------------------------------- */

static int64_t arena_alloc(rio_loop *l, uint32_t n)
{
    uint32_t total = l->arena_chunks, i = l->arena_cursor, run = 0, start = 0;
    if (n == 0 || n > total)
        return -1;
    for (uint64_t scanned = 0; scanned < (uint64_t)total + n; ) {
        if (i >= total) {
            i = 0;
            run = 0;
        }
        uint64_t w = l->arena_map[i >> 6];
        if (run == 0 && (i & 63) == 0 && w == ~0ULL) {
            i += 64;
            scanned += 64;
            continue;
        }
        if (w & (1ULL << (i & 63))) {
            run = 0;
        } else {
            if (run++ == 0)
                start = i;
            if (run == n) {
                for (uint32_t k = start; k < start + n; k++)
                    l->arena_map[k >> 6] |= 1ULL << (k & 63);
                l->arena_cursor = start + n;
                return start;
            }
        }
        i++;
        scanned++;
    }
    return -1;
}

static void arena_release(rio_loop *l, uint32_t start, uint32_t n)
{
    for (uint32_t k = start; k < start + n; k++)
        l->arena_map[k >> 6] &= ~(1ULL << (k & 63));
}

int rio_slot_in_arena(rio_loop *l, uint32_t s)
{
    return l->slots[s].nchunks != 0;
}

int64_t rio_slot_new(rio_loop *l, const char *data, size_t len)
{
    if (len == 0 || len > UINT32_MAX)
        return -EINVAL;
    if (l->slot_free == RIO_NONE) {
        uint32_t old = l->slots_cap, cap = old ? old * 2 : 1024;
        slot *s = realloc(l->slots, cap * sizeof(*s));
        if (!s)
            return -ENOMEM;
        l->slots = s;
        for (uint32_t i = old; i < cap; i++)
            s[i] = (slot){.next_free = i + 1 < cap ? i + 1 : l->slot_free};
        l->slot_free = old;
        l->slots_cap = cap;
    }
    uint32_t idx = l->slot_free;
    slot *s = &l->slots[idx];
    uint32_t n = (uint32_t)((len + RIO_CHUNK - 1) / RIO_CHUNK);
    int64_t chunk = l->arena ? arena_alloc(l, n) : -1;
    if (chunk >= 0) {
        s->data = l->arena + (uint64_t)chunk * RIO_CHUNK;
        s->chunk = (uint32_t)chunk;
        s->nchunks = n;
        l->st.arena_used += (uint64_t)n * RIO_CHUNK;
    } else {
        /* Arena full or absent: ordinary memory works for plain sends. */
        s->data = malloc(len);
        if (!s->data)
            return -ENOMEM;
        s->nchunks = 0;
        l->st.slots_heap++;
    }
    l->slot_free = s->next_free;
    memcpy(s->data, data, len);
    s->len = (uint32_t)len;
    s->refs = 1;
    l->st.slots_live++;
    return idx;
}

void rio_slot_unref(rio_loop *l, uint32_t idx)
{
    slot *s = &l->slots[idx];
    if (--s->refs)
        return;
    if (s->nchunks) {
        arena_release(l, s->chunk, s->nchunks);
        l->st.arena_used -= (uint64_t)s->nchunks * RIO_CHUNK;
    } else {
        free(s->data);
        l->st.slots_heap--;
    }
    s->data = NULL;
    s->next_free = l->slot_free;
    l->slot_free = idx;
    l->st.slots_live--;
}

void rio_slot_put(rio_loop *l, int64_t idx)
{
    if (idx >= 0 && (uint64_t)idx < l->slots_cap && l->slots[idx].refs)
        rio_slot_unref(l, (uint32_t)idx);
}

/* ---- per-connection queues --------------------------------------------- */

static int q_push(conn *c, uint32_t s, uint32_t len)
{
    if (c->qlen == c->qcap) {
        uint32_t cap = c->qcap ? c->qcap * 2 : 8;
        qent *q = malloc(cap * sizeof(*q));
        if (!q)
            return -ENOMEM;
        for (uint32_t i = 0; i < c->qlen; i++)
            q[i] = c->q[(c->qhead + i) & (c->qcap - 1)];
        free(c->q);
        c->q = q;
        c->qcap = cap;
        c->qhead = 0;
    }
    qent *e = &c->q[(c->qhead + c->qlen) & (c->qcap - 1)];
    e->slot = s;
    e->off = 0;
    e->len = len;
    c->qlen++;
    c->queued += len;
    return 0;
}

static qent *q_at(conn *c, uint32_t i)
{
    return &c->q[(c->qhead + i) & (c->qcap - 1)];
}

uint32_t rio_fill_iov(rio_loop *l, conn *c, struct iovec *iov, uint32_t max)
{
    uint32_t n = c->qlen < max ? c->qlen : max;
    for (uint32_t i = 0; i < n; i++) {
        qent *e = q_at(c, i);
        iov[i].iov_base = l->slots[e->slot].data + e->off;
        iov[i].iov_len = e->len - e->off;
    }
    return n;
}

/* n bytes of the queue head went out: release what was fully sent. */
void rio_consume(rio_loop *l, uint32_t id, uint64_t n)
{
    conn *c = &l->conns[id];
    if (c->hb)
        c->hb_tx = now_ms();
    l->st.send_bytes += n;
    c->queued -= n;
    l->st.queued_bytes -= n;
    while (n && c->qlen) {
        qent *e = q_at(c, 0);
        uint32_t left = e->len - e->off;
        if (n < left) {
            e->off += (uint32_t)n;
            break;
        }
        n -= left;
        rio_slot_unref(l, e->slot);
        c->qhead = (c->qhead + 1) & (c->qcap - 1);
        c->qlen--;
    }
    if (!c->qlen)
        c->overflowed = 0;
}

/* Drop queue entries from the tail until `keep` are left. */
static void drop_tail(rio_loop *l, conn *c, uint32_t keep)
{
    while (c->qlen > keep) {
        qent *e = q_at(c, c->qlen - 1);
        uint32_t left = e->len - e->off;
        c->queued -= left;
        l->st.queued_bytes -= left;
        rio_slot_unref(l, e->slot);
        c->qlen--;
    }
    if (!c->qlen) {
        c->queued = 0;
        c->overflowed = 0;
    }
}

/* Release every queued entry that no operation in flight still reads. */
void rio_drop_queue(rio_loop *l, conn *c)
{
    drop_tail(l, c, c->inflight);
}

int64_t rio_trim(rio_loop *l, uint32_t id)
{
    conn *c = stream(l, id);
    if (!c)
        return -EBADF;
    /* Entries stay whole: a frame cut in its middle would corrupt the stream. */
    uint32_t keep = c->inflight;
    if (!keep && c->qlen && q_at(c, 0)->off)
        keep = 1;
    uint64_t before = c->queued;
    drop_tail(l, c, keep);
    return (int64_t)(before - c->queued);
}

void rio_hup(rio_loop *l, uint32_t id, int err)
{
    conn *c = &l->conns[id];
    if (c->state != CS_OPEN || c->hup_sent)
        return;
    c->hup_sent = 1;
    ev_conn(l, id, OWE_HUP, err, 0);
}

/* A send failed for good: nothing more can reach this peer. */
void rio_send_failed(rio_loop *l, uint32_t id, int err)
{
    conn *c = &l->conns[id];
    c->send_broken = 1;
    rio_drop_queue(l, c);
    rio_hup(l, id, err);
}

/* ---- public API -------------------------------------------------------- */

rio_loop *rio_open(const rio_params *p, int *err, int *stage)
{
    *err = 0;
    *stage = RIO_STAGE_PARAMS;
    if (!p->max_conns || !p->data_capacity || p->data_capacity < p->buf_size ||
        (p->event_limit && p->event_limit < RIO_EV_PER_STEP)) {
        *err = EINVAL;
        return NULL;
    }
    *stage = RIO_STAGE_MEMORY;
    rio_loop *l = calloc(1, sizeof(*l));
    if (!l) {
        *err = ENOMEM;
        return NULL;
    }
    l->p = *p;
    l->epfd = -1;
    l->hb_slot = -1;
    l->slot_free = RIO_NONE;
    l->zc_free = RIO_NONE;
    l->conns = calloc(p->max_conns, sizeof(conn));
    l->evcap = p->event_limit && p->event_limit < 1024 ? p->event_limit : 1024;
    l->ev = malloc(l->evcap * sizeof(rio_event));
    l->owed = malloc((size_t)p->max_conns * sizeof(uint32_t));
    l->data = malloc(p->data_capacity);
    if (!l->conns || !l->ev || !l->owed || !l->data) {
        *err = ENOMEM;
        goto fail;
    }
    for (uint32_t i = 0; i < p->max_conns; i++) {
        l->conns[i].fd = -1;
        l->conns[i].next_free = i + 1 < p->max_conns ? i + 1 : RIO_NONE;
    }
    l->conn_free = 0;
    if (p->arena_size) {
        l->arena_chunks = (uint32_t)(p->arena_size / RIO_CHUNK);
        uint64_t bytes = (uint64_t)l->arena_chunks * RIO_CHUNK;
        void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        l->arena_map = calloc((l->arena_chunks + 63) / 64, sizeof(uint64_t));
        if (m == MAP_FAILED || !l->arena_map) {
            *err = ENOMEM;
            goto fail;
        }
        l->arena = m;
    }
    l->probe.engine = p->engine;
    l->eng = p->engine == ENGINE_EPOLL ? &rio_epoll_ops : &rio_uring_ops;
    int rc = p->engine == ENGINE_EPOLL ? rio_epoll_open(l, stage) : rio_uring_open(l, stage);
    if (rc < 0) {
        *err = -rc;
        goto fail;
    }
    return l;
fail:
    rio_destroy(l);
    return NULL;
}

void rio_destroy(rio_loop *l)
{
    if (!l)
        return;
    if (l->eng)
        l->eng->destroy(l);
    if (l->conns) {
        for (uint32_t i = 0; i < l->p.max_conns; i++) {
            if (l->conns[i].kind != CK_FREE && l->conns[i].fd >= 0)
                close(l->conns[i].fd);
            free(l->conns[i].q);
        }
    }
    for (uint32_t i = 0; i < l->slots_cap; i++)
        if (l->slots[i].refs && !l->slots[i].nchunks)
            free(l->slots[i].data);
    if (l->arena)
        munmap(l->arena, (uint64_t)l->arena_chunks * RIO_CHUNK);
    free(l->arena_map);
    free(l->slots);
    free(l->conns);
    free(l->ev);
    free(l->owed);
    free(l->data);
    free(l);
}

void rio_get_probe(rio_loop *l, rio_probe *out)
{
    *out = l->probe;
}

const rio_stats *rio_get_stats(rio_loop *l)
{
    return &l->st;
}

int rio_listen(rio_loop *l, int fd)
{
    /* Accepted sockets inherit TCP_NODELAY from their listener (Linux copies it
     * into the child socket): set once here, not once per connection. Not a TCP
     * listener (a Unix socket): nothing to set, and nothing fails. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    int64_t id = rio_conn_alloc(l, fd, CK_LISTENER);
    if (id < 0)
        return (int)id;
    int rc = l->eng->listen(l, (uint32_t)id);
    if (rc < 0) {
        l->conns[id].fd = -1;   /* the caller still owns the fd on failure */
        rio_conn_free(l, (uint32_t)id);
        return rc;
    }
    return (int)id;
}

int rio_adopt(rio_loop *l, int fd)
{
    int64_t id = rio_conn_alloc(l, fd, CK_STREAM);
    if (id < 0)
        return (int)id;
    int rc = l->eng->adopt(l, (uint32_t)id);
    if (rc < 0) {
        l->conns[id].fd = -1;
        rio_conn_free(l, (uint32_t)id);
        return rc;
    }
    return (int)id;
}

int rio_resume_accept(rio_loop *l, uint32_t id)
{
    conn *c = stream(l, id);
    if (!c || c->kind != CK_LISTENER || c->state != CS_OPEN)
        return -EBADF;
    if (!c->accept_paused)
        return 0;
    c->accept_paused = 0;
    return l->eng->resume_accept(l, id);
}

void rio_hard_close(rio_loop *l, uint32_t id)
{
    conn *c = &l->conns[id];
    c->state = CS_CLOSING;
    rio_drop_queue(l, c);
    l->eng->close(l, id);
}

/* A flushing close has sent everything: shut down writing (the peer sees EOF
 * after our last byte) and linger until the peer closes too. */
void rio_flushed(rio_loop *l, uint32_t id)
{
    conn *c = &l->conns[id];
    if (c->send_broken || c->rd_closed || shutdown(c->fd, SHUT_WR) < 0) {
        rio_hard_close(l, id);
        return;
    }
    c->state = CS_LINGER;
}

int rio_close(rio_loop *l, uint32_t id, int how)
{
    conn *c = stream(l, id);
    if (!c)
        return -EBADF;
    c->closed_by_caller = 1;
    if (c->state == CS_CLOSING)
        return 0;
    if (how == RIO_CLOSE_ABORT && c->kind == CK_STREAM) {
        /* Linger 0: close() resets the connection and frees the socket's
         * buffers now, instead of leaving an orphan that holds them until the
         * kernel gives up on a peer that does not read. */
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    if (how == RIO_CLOSE_FLUSH && c->kind == CK_STREAM && !c->send_broken) {
        if (c->state != CS_OPEN)
            return 0;               /* already draining or lingering */
        if (c->qlen)
            c->state = CS_DRAINING; /* the engine calls rio_flushed when empty */
        else
            rio_flushed(l, id);
        return 0;
    }
    rio_hard_close(l, id);
    return 0;
}

int64_t rio_generation(rio_loop *l, uint32_t id)
{
    conn *c = stream(l, id);
    return c ? (int64_t)c->gen : -EBADF;
}

int64_t rio_queued(rio_loop *l, uint32_t id)
{
    conn *c = stream(l, id);
    return c ? (int64_t)c->queued : -EBADF;
}

/* Queue slot s to the ids (the work of rio_fanout and rio_send): how many took it. */
static int64_t queue_slot(rio_loop *l, uint32_t s, const uint32_t *ids, size_t n,
                          uint32_t exclude, uint64_t cap, int mode)
{
    uint32_t len = l->slots[s].len;
    int64_t queued = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t id = ids[i];
        if (id == exclude || id >= l->p.max_conns)
            continue;
        conn *c = &l->conns[id];
        if (c->kind != CK_STREAM || c->state != CS_OPEN || c->send_broken)
            continue;
        /* The cap bounds the backlog, not one message: an empty queue always
         * takes the next frame (its size is bounded by the caller). */
        if (mode != RIO_SEND_FORCE && cap && c->queued && c->queued + len > cap) {
            l->st.drops++;
            if (!c->overflowed) {
                c->overflowed = 1;
                l->st.overflows++;
                ev_conn(l, id, OWE_OVERFLOW, 0, c->queued);
            }
            continue;
        }
        if (q_push(c, s, len) < 0) {
            l->st.drops++;
            continue;
        }
        l->slots[s].refs++;
        l->st.queued_bytes += len;
        queued++;
        l->eng->kick(l, id);
    }
    /* No flush: the next reap submits every send this iteration prepared, at
     * once; a caller that wants them out before (none does) calls rio_reap(0). */
    return queued;
}

int64_t rio_fanout(rio_loop *l, int64_t sidx, const uint32_t *ids, size_t n,
                   uint32_t exclude, uint64_t cap, int mode)
{
    if (sidx < 0 || (uint64_t)sidx >= l->slots_cap || !l->slots[sidx].refs)
        return -EINVAL;
    int64_t queued = queue_slot(l, (uint32_t)sidx, ids, n, exclude, cap, mode);
    l->st.deliveries += (uint64_t)queued;  /* a fan-out's, not rio_send's answers */
    return queued;
}

int rio_send(rio_loop *l, uint32_t id, const char *data, size_t len, uint64_t cap, int mode)
{
    int64_t s = rio_slot_new(l, data, len);
    if (s < 0)
        return (int)s;
    int64_t n = queue_slot(l, (uint32_t)s, &id, 1, RIO_NONE, cap, mode);
    rio_slot_put(l, s);
    return (int)n;
}

/* ---- heartbeats ------------------------------------------------------------
 *
 * A keepalive that costs the caller nothing per connection: one pass over the
 * id table every hb_period queues the heartbeat slot to each connection idle
 * for hb_interval (a reference to one slot: no copy, no allocation) and
 * reports the ones still silent hb_timeout after it. A pass reads a few bytes
 * per id, so even a million ids cost milliseconds a second; a timer per
 * connection would cost more to keep than this costs to scan. */

int rio_heartbeat_config(rio_loop *l, uint32_t interval_ms, uint32_t timeout_ms,
                         int64_t sidx, uintptr_t absorb)
{
    if (interval_ms && (!timeout_ms || sidx < 0 || (uint64_t)sidx >= l->slots_cap ||
                        !l->slots[sidx].refs))
        return -EINVAL;
    /* The loop's own slot is not a frame on its way to anyone: slots_live leaves it
     * out, so that an idle loop still counts 0 (what leak checks read). */
    if (interval_ms) {
        l->slots[sidx].refs++;
        l->st.slots_live--;
    }
    if (l->hb_slot >= 0) {
        l->st.slots_live++;
        rio_slot_put(l, l->hb_slot);
    }
    l->hb_slot = interval_ms ? sidx : -1;
    l->hb_interval = interval_ms;
    l->hb_timeout = timeout_ms;
    uint32_t shortest = interval_ms < timeout_ms ? interval_ms : timeout_ms;
    l->hb_period = shortest / 4 < 1000 ? (shortest / 4 ? shortest / 4 : 1) : 1000;
    l->hb_absorb = interval_ms ? (int (*)(const uint8_t *, size_t, int *))absorb : NULL;
    l->hb_next = now_ms();
    return 0;
}

int rio_behind(rio_loop *l)
{
    return l->behind;
}

int rio_heartbeat(rio_loop *l, uint32_t id, int on, int aligned)
{
    conn *c = stream(l, id);
    if (!c)
        return -EBADF;
    c->hb = on ? 1 : 0;
    c->hb_aligned = aligned ? 1 : 0;
    c->hb_waiting = 0;
    c->hb_rx = c->hb_tx = now_ms();
    return 0;
}

static void hb_sweep(rio_loop *l, uint32_t now)
{
    uint32_t slot = (uint32_t)l->hb_slot;
    for (uint32_t id = 0; id < l->p.max_conns; id++) {
        conn *c = &l->conns[id];
        if (!c->hb)
            continue;
        if (c->kind != CK_STREAM || c->state != CS_OPEN) {
            c->hb = 0;      /* closed: nothing more to keep alive */
            continue;
        }
        if (!c->hb_waiting) {
            /* Quiet either way for the interval: silence from the peer may be a dead
             * peer, and silence towards it lets a proxy's read timeout expire. */
            if ((now - c->hb_rx >= l->hb_interval || now - c->hb_tx >= l->hb_interval) &&
                queue_slot(l, slot, &id, 1, RIO_NONE, 0, RIO_SEND_FORCE) == 1) {
                c->hb_waiting = 1;
                c->hb_sent = now;
                l->st.heartbeats++;
            }
        } else if (!l->behind && now - c->hb_sent >= l->hb_timeout) {
            if (rio_ev_reserve(l, 1) < 0) {
                l->st.events_deferred++;
                return;     /* no room: the next pass reports it */
            }
            rio_ev_put(l, RIO_EV_HEARTBEAT_TIMEOUT, id, 0, 0, 0);
            c->hb = 0;
            l->st.heartbeat_timeouts++;
        }
    }
}

/* Run a due pass, and shorten *wait_ms so that the wait ends by the next one.
 * 0, or -errno when the engine failed. */
static int hb_tick(rio_loop *l, int *wait_ms)
{
    uint32_t now = now_ms();
    if ((int32_t)(now - l->hb_next) >= 0) {
        /* Read what has arrived before judging who is silent: a reply waiting in
         * the kernel while the caller was busy is an answer, not a timeout. When
         * even that wait could not read everything (l->behind: a storm, a starved
         * process), the pass sends heartbeats but judges nobody; a later pass that
         * has caught up does. A server late to read must not close the clients
         * that answered it. */
        int rc = l->eng->wait(l, 0);
        if (rc < 0)
            return rc;
        now = now_ms();
        if (l->behind)
            l->st.heartbeat_unjudged++;
        hb_sweep(l, now);
        l->hb_next = now + l->hb_period;
    }
    int32_t left = (int32_t)(l->hb_next - now);
    if (left < 0)
        left = 0;
    if (*wait_ms < 0 || *wait_ms > left)
        *wait_ms = left;
    return 0;
}

/* The engine cannot go on (see enter_failed() in uring.c): from now on
 * rio_reap returns err, and the loop can only be destroyed. */
void rio_fail(rio_loop *l, int err)
{
    if (!l->failed)
        l->failed = err;
}

int rio_reap(rio_loop *l, int timeout_ms)
{
    if (l->failed)
        return l->failed;
    compact(l);
    pay_owed(l);        /* what connections held goes out first */
    /* With heartbeats on, a wait whose only work was the loop's own (heartbeats
     * sent, their replies absorbed) waits on, up to the caller's timeout: keepalive
     * must not wake the caller once per reply. */
    int64_t deadline = timeout_ms > 0 ? mono_ms() + timeout_ms : 0;
    for (;;) {
        int wait_ms = timeout_ms;
        int rc = l->hb_interval ? hb_tick(l, &wait_ms) : 0;
        if (rc == 0) {
            l->st.waits++;
            rc = l->eng->wait(l, l->nev ? 0 : wait_ms);
        }
        if (rc < 0) {
            rio_fail(l, rc);
            return rc;
        }
        if (l->nev || !l->hb_interval || timeout_ms == 0)
            break;
        if (timeout_ms > 0) {
            int64_t left = deadline - mono_ms();
            if (left <= 0)
                break;
            timeout_ms = (int)left;
        }
    }
    l->ev_returned = l->nev;
    l->data_returned = l->ndata;
    return (int)l->nev;
}

rio_event *rio_events(rio_loop *l)
{
    return l->ev;
}

const char *rio_data(rio_loop *l)
{
    return l->data;
}
