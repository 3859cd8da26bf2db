/* wsscan: WebSocket frame scanning and delivery accounting for the load client.
 *
 * Everything per delivery happens here: Python hands over the bytes of a whole
 * reap and gets counts, notes (pings owed, closes) and latency buckets back.
 * The contract is in wsscan_api.h.
 *
 * Parsing is streaming: a frame header split across reads is gathered in a
 * 14-byte buffer, a payload split across reads (or a message split into
 * continuation frames) is checked as its bytes come, against a pattern that
 * depends only on the message's offset and its 20-byte header. Nothing of a
 * data message is buffered but its header.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "wsscan_api.h"

#define HEAD 20                 /* seq(8) ts(8) pub(4) */
#define GOLD 0x9E3779B97F4A7C15ULL
#define WINDOW 64               /* sequence numbers remembered below the next expected */

/* Histogram: values < 256 ns exact, then 128 sub-buckets per power of two
 * (relative error < 0.8%), up to 2^43 ns (about 2.4 hours). */
#define LIN 256
#define SUB_BITS 7
#define SUB (1u << SUB_BITS)
#define MAX_EXP 42
#define NBUCKETS (LIN + (MAX_EXP - 8 + 1) * SUB)

typedef struct wpub {
    uint64_t exp;               /* next expected sequence number               */
    uint64_t win;               /* bit i: exp - 1 - i was received              */
    uint64_t start;             /* exp at ws_conn_set: older ones came early    */
} wpub;

typedef struct wconn {
    uint8_t role;
    uint8_t broken;             /* protocol error or close seen: stop parsing   */
    uint8_t hlen;               /* header bytes gathered                        */
    uint8_t in_frame;           /* header complete, payload pending             */
    uint8_t fop;                /* opcode of the current frame                  */
    uint8_t ffin;
    uint8_t mop;                /* opcode of the data message in progress, or 0 */
    uint8_t mbad;               /* pattern mismatch or too long                 */
    uint8_t mframes;            /* frames of this message (saturating)          */
    uint8_t clen;               /* control payload gathered                     */
    uint8_t closed;             /* a close frame arrived                        */
    uint8_t after_close;        /* bytes after it were reported                 */
    uint8_t receiving;          /* an intact message arrived since ws_conn_set  */
    uint8_t hdr[14];
    uint8_t mhead[HEAD];
    uint8_t ctl[125];
    uint64_t remaining;         /* payload bytes left in the current frame      */
    uint64_t mpos;              /* bytes of the current message so far          */
    uint64_t seed;              /* pattern seed, once mpos >= HEAD              */
} wconn;

typedef struct wmsg {
    uint64_t seq;
    uint64_t ts;
    uint64_t maxlat;
    uint32_t expected;
    uint32_t resolved;          /* received (intact or not) or skipped past     */
    uint32_t got;               /* received intact                              */
    uint32_t waiting;           /* followers' ws_done records still owed        */
    uint32_t done;
} wmsg;

struct ws_scan {
    uint32_t max_conns, npub, size, opcode;
    uint64_t ring_mask;
    uint32_t ring_bits;
    wconn *conns;
    wpub *pubs;                 /* max_conns * npub                             */
    wmsg *ring;                 /* npub * (ring_mask + 1)                       */
    uint64_t *published;        /* per publisher                                */
    uint64_t *tail;             /* per publisher: oldest maybe-unfinished seq   */
    ws_counts ct;
    uint64_t *hist;             /* 4 * NBUCKETS                                 */
    ws_note *notes;
    uint32_t nnotes, notecap;
    uint64_t now;
    uint32_t peers;             /* lead: records owed per message (ws_set_team) */
    int log_done;               /* follower: log finished messages              */
    ws_done *done;
    uint32_t ndone, donecap;
};

/* ---- pattern ----------------------------------------------------------- */

static inline uint64_t mix64(uint64_t z)
{
    z += GOLD;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline uint64_t seed_of(uint64_t seq, uint64_t ts, uint32_t pub)
{
    return mix64(seq ^ mix64(ts ^ mix64(pub)));
}

static inline uint64_t rd64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;                   /* little-endian hosts (x86-64, aarch64) */
}

static inline uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Do k bytes at message offset pos (>= HEAD) match the pattern? */
static int pattern_ok(uint64_t seed, uint64_t pos, const uint8_t *p, size_t k)
{
    uint64_t w = seed + (pos >> 3) * GOLD;
    while (k && (pos & 7)) {
        if (*p != (uint8_t)(w >> (8 * (pos & 7))))
            return 0;
        p++;
        k--;
        pos++;
        if (!(pos & 7))
            w += GOLD;
    }
    uint64_t diff = 0;
    /* Four words a step, each with its own expected value: no chain through w, so
     * the compiler can vectorise (a 1 MB message is 125,000 words). */
    const uint64_t g2 = 2 * GOLD, g3 = 3 * GOLD, g4 = 4 * GOLD;
    while (k >= 32) {
        diff |= (rd64(p) ^ w) | (rd64(p + 8) ^ (w + GOLD)) | (rd64(p + 16) ^ (w + g2)) |
                (rd64(p + 24) ^ (w + g3));
        w += g4;
        p += 32;
        k -= 32;
    }
    while (k >= 8) {
        diff |= rd64(p) ^ w;
        w += GOLD;
        p += 8;
        k -= 8;
    }
    if (diff)
        return 0;
    for (size_t i = 0; i < k; i++)
        if (p[i] != (uint8_t)(w >> (8 * i)))
            return 0;
    return 1;
}

void ws_payload(uint8_t *out, uint32_t pub, uint64_t seq, uint64_t ts, uint32_t size)
{
    uint8_t head[HEAD];
    memcpy(head, &seq, 8);
    memcpy(head + 8, &ts, 8);
    memcpy(head + 16, &pub, 4);
    memcpy(out, head, size < HEAD ? size : HEAD);
    uint64_t seed = seed_of(seq, ts, pub);
    uint64_t pos = HEAD;
    uint64_t w = seed + (pos >> 3) * GOLD;
    for (; pos < size && (pos & 7); pos++)
        out[pos] = (uint8_t)(w >> (8 * (pos & 7)));
    w = seed + (pos >> 3) * GOLD;
    for (; pos + 8 <= size; pos += 8, w += GOLD)
        memcpy(out + pos, &w, 8);
    for (; pos < size; pos++)
        out[pos] = (uint8_t)(w >> (8 * (pos & 7)));
}

size_t ws_frame(uint8_t *out, size_t cap, uint32_t pub, uint64_t seq, uint64_t ts,
                uint32_t size, int opcode, int masked, uint32_t mask_key)
{
    size_t h = 2;
    uint8_t b1 = masked ? 0x80 : 0;
    if (size > 65535)
        h += 8;
    else if (size > 125)
        h += 2;
    if (masked)
        h += 4;
    if (cap < h + size)
        return 0;
    out[0] = (uint8_t)(0x80 | (opcode & 0x0f));
    if (size > 65535) {
        out[1] = b1 | 127;
        for (int i = 0; i < 8; i++)
            out[2 + i] = (uint8_t)((uint64_t)size >> (56 - 8 * i));
    } else if (size > 125) {
        out[1] = b1 | 126;
        out[2] = (uint8_t)(size >> 8);
        out[3] = (uint8_t)size;
    } else {
        out[1] = b1 | (uint8_t)size;
    }
    uint8_t *pl = out + h;
    ws_payload(pl, pub, seq, ts, size);
    if (masked) {
        uint8_t key[4];
        memcpy(key, &mask_key, 4);
        memcpy(pl - 4, key, 4);
        uint64_t k8;
        uint8_t kb[8] = {key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]};
        memcpy(&k8, kb, 8);
        size_t i = 0;
        for (; i + 8 <= size; i += 8) {
            uint64_t v;
            memcpy(&v, pl + i, 8);
            v ^= k8;
            memcpy(pl + i, &v, 8);
        }
        for (; i < size; i++)
            pl[i] ^= key[i & 3];
    }
    return h + size;
}

int ws_check(const uint8_t *p, size_t len, uint32_t size)
{
    if (len != size || len < HEAD)
        return 0;
    uint64_t seed = seed_of(rd64(p), rd64(p + 8), rd32(p + 16));
    return pattern_ok(seed, HEAD, p + HEAD, len - HEAD);
}

/* ---- histogram --------------------------------------------------------- */

uint32_t ws_hist_buckets(void)
{
    return NBUCKETS;
}

uint32_t ws_bucket_of(uint64_t v)
{
    if (v < LIN)
        return (uint32_t)v;
    int e = 63 - __builtin_clzll(v);
    if (e > MAX_EXP)
        return NBUCKETS - 1;
    uint32_t sub = (uint32_t)(v >> (e - SUB_BITS)) & (SUB - 1);
    return LIN + (uint32_t)(e - 8) * SUB + sub;
}

uint64_t ws_bucket_low(uint32_t i)
{
    if (i < LIN)
        return i;
    uint32_t e = 8 + (i - LIN) / SUB, sub = (i - LIN) % SUB;
    return (uint64_t)(SUB + sub) << (e - SUB_BITS);
}

uint64_t ws_bucket_high(uint32_t i)
{
    if (i < LIN)
        return i;
    uint32_t e = 8 + (i - LIN) / SUB;
    return ws_bucket_low(i) + ((uint64_t)1 << (e - SUB_BITS)) - 1;
}

static inline void hist_add(ws_scan *s, int which, uint64_t v)
{
    uint32_t b = ws_bucket_of(v);
    s->hist[which * NBUCKETS + b]++;
    s->hist[(which + 2) * NBUCKETS + b]++;
}

const uint64_t *ws_hist(ws_scan *s, int which)
{
    if (which < 0 || which > 3)
        return NULL;
    return s->hist + (size_t)which * NBUCKETS;
}

void ws_hist_reset_interval(ws_scan *s)
{
    memset(s->hist + 2 * NBUCKETS, 0, 2 * NBUCKETS * sizeof(uint64_t));
}

/* ---- lifecycle --------------------------------------------------------- */

ws_scan *ws_new(uint32_t max_conns, uint32_t npub, uint32_t size, uint32_t opcode,
                uint32_t ring_bits)
{
    if (!max_conns || !npub || npub > 4096 || size < HEAD || ring_bits < 4 || ring_bits > 24
        || (opcode != 1 && opcode != 2))
        return NULL;
    ws_scan *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->max_conns = max_conns;
    s->npub = npub;
    s->size = size;
    s->opcode = opcode;
    s->ring_mask = (1ULL << ring_bits) - 1;
    s->ring_bits = ring_bits;
    s->conns = calloc(max_conns, sizeof(wconn));
    s->pubs = calloc((size_t)max_conns * npub, sizeof(wpub));
    s->ring = calloc((size_t)npub << ring_bits, sizeof(wmsg));
    s->published = calloc(npub, sizeof(uint64_t));
    s->tail = calloc(npub, sizeof(uint64_t));
    s->hist = calloc(4 * NBUCKETS, sizeof(uint64_t));
    s->notecap = 64;
    s->notes = malloc(s->notecap * sizeof(ws_note));
    if (!s->conns || !s->pubs || !s->ring || !s->published || !s->tail || !s->hist
        || !s->notes) {
        ws_free(s);
        return NULL;
    }
    for (size_t i = 0; i < ((size_t)npub << ring_bits); i++) {
        s->ring[i].done = 1;
        s->ring[i].seq = UINT64_MAX;
    }
    return s;
}

void ws_free(ws_scan *s)
{
    if (!s)
        return;
    free(s->conns);
    free(s->pubs);
    free(s->ring);
    free(s->published);
    free(s->tail);
    free(s->hist);
    free(s->notes);
    free(s->done);
    free(s);
}

const ws_counts *ws_get_counts(ws_scan *s)
{
    return &s->ct;
}

uint64_t ws_published(ws_scan *s, uint32_t pub)
{
    return pub < s->npub ? s->published[pub] : 0;
}

/* ---- messages in flight ------------------------------------------------ */

static inline wmsg *msg_at(ws_scan *s, uint32_t pub, uint64_t seq)
{
    wmsg *m = &s->ring[((uint64_t)pub << s->ring_bits)
                       + (seq & s->ring_mask)];
    return (m->seq == seq && !m->done) ? m : NULL;
}

/* A follower logs a message it stops tracking (see ws_set_team). */
static void log_done(ws_scan *s, uint32_t pub, const wmsg *m)
{
    if (!s->log_done)
        return;
    if (s->ndone == s->donecap) {
        uint32_t cap = s->donecap ? s->donecap * 2 : 256;
        ws_done *d = realloc(s->done, cap * sizeof(ws_done));
        if (!d)
            return;             /* the lead gives the message up by its timeout */
        s->done = d;
        s->donecap = cap;
    }
    s->done[s->ndone++] = (ws_done){.seq = m->seq, .maxlat = m->maxlat, .pub = pub,
                                    .expected = m->expected, .resolved = m->resolved,
                                    .got = m->got};
}

static void msg_check_done(ws_scan *s, uint32_t pub, wmsg *m)
{
    if (m->resolved < m->expected || m->waiting)
        return;
    m->done = 1;
    s->ct.completed++;
    if (m->got >= m->expected && m->expected) {
        s->ct.completed_all++;
        hist_add(s, 1, m->maxlat);
    }
    log_done(s, pub, m);
}

static void msg_give_up(ws_scan *s, uint32_t pub, wmsg *m)
{
    m->done = 1;
    s->ct.expired++;
    log_done(s, pub, m);
}

int ws_publish(ws_scan *s, uint32_t pub, uint64_t seq, uint64_t ts, uint32_t expected)
{
    if (pub >= s->npub || seq != s->published[pub])
        return -1;
    wmsg *m = &s->ring[((uint64_t)pub << s->ring_bits)
                       + (seq & s->ring_mask)];
    if (!m->done)               /* still in flight a whole ring later: give up on it */
        msg_give_up(s, pub, m);
    *m = (wmsg){.seq = seq, .ts = ts, .expected = expected, .waiting = s->peers};
    s->published[pub] = seq + 1;
    msg_check_done(s, pub, m);  /* nobody to wait for */
    return 0;
}

int ws_set_team(ws_scan *s, int log, uint32_t peers)
{
    if (peers > 4096 || (log && peers))
        return -1;
    s->log_done = log;
    s->peers = peers;
    return 0;
}

ws_done *ws_take_done(ws_scan *s, uint32_t *count)
{
    *count = s->ndone;
    s->ndone = 0;
    return s->done;
}

int ws_merge(ws_scan *s, const ws_done *r, size_t n)
{
    for (size_t i = 0; i < n; i++, r++) {
        if (r->pub >= s->npub)
            return -1;
        wmsg *m = msg_at(s, r->pub, r->seq);
        if (!m || !m->waiting)
            continue;           /* given up on here already */
        m->waiting--;
        m->expected += r->expected;
        m->resolved += r->resolved;
        m->got += r->got;
        if (r->maxlat > m->maxlat)
            m->maxlat = r->maxlat;
        msg_check_done(s, r->pub, m);
    }
    return 0;
}

uint64_t ws_expire(ws_scan *s, uint64_t cutoff)
{
    uint64_t n = 0;
    for (uint32_t p = 0; p < s->npub; p++) {
        uint64_t t = s->tail[p];
        if (s->published[p] > s->ring_mask + 1 && t < s->published[p] - s->ring_mask - 1)
            t = s->published[p] - s->ring_mask - 1;
        for (; t < s->published[p]; t++) {
            wmsg *m = &s->ring[((uint64_t)p << s->ring_bits)
                               + (t & s->ring_mask)];
            if (m->seq != t || m->done)
                continue;
            if (m->ts >= cutoff)
                break;
            msg_give_up(s, p, m);
            n++;
        }
        s->tail[p] = t;
    }
    return n;
}

/* ---- connections ------------------------------------------------------- */

int ws_conn_set(ws_scan *s, uint32_t id, int role)
{
    if (id >= s->max_conns)
        return -1;
    wconn *c = &s->conns[id];
    memset(c, 0, sizeof(*c));
    c->role = (uint8_t)role;
    wpub *wp = &s->pubs[(size_t)id * s->npub];
    for (uint32_t p = 0; p < s->npub; p++) {
        wp[p].exp = wp[p].start = s->published[p];
        wp[p].win = ~0ULL;
    }
    return 0;
}

void ws_conn_gone(ws_scan *s, uint32_t id)
{
    if (id >= s->max_conns)
        return;
    wconn *c = &s->conns[id];
    if (c->role == WS_ROLE_SUB) {
        wpub *wp = &s->pubs[(size_t)id * s->npub];
        for (uint32_t p = 0; p < s->npub; p++) {
            uint64_t from = wp[p].exp, to = s->published[p];
            if (to - from > s->ring_mask + 1)
                from = to - s->ring_mask - 1;
            for (uint64_t q = from; q < to; q++) {
                wmsg *m = msg_at(s, p, q);
                if (m && m->expected) {
                    m->expected--;
                    msg_check_done(s, p, m);
                }
            }
        }
    }
    c->role = WS_ROLE_NONE;
    c->broken = 1;
}

void ws_finish(ws_scan *s)
{
    for (uint32_t id = 0; id < s->max_conns; id++) {
        if (s->conns[id].role != WS_ROLE_SUB)
            continue;
        wpub *wp = &s->pubs[(size_t)id * s->npub];
        for (uint32_t p = 0; p < s->npub; p++) {
            if (s->published[p] > wp[p].exp) {
                s->ct.undelivered += s->published[p] - wp[p].exp;
                wp[p].win = (s->published[p] - wp[p].exp >= WINDOW)
                    ? 0 : wp[p].win << (s->published[p] - wp[p].exp);
                wp[p].exp = s->published[p];
            }
        }
    }
}

/* ---- notes ------------------------------------------------------------- */

static void note(ws_scan *s, uint32_t conn, uint32_t kind, uint32_t aux,
                 const uint8_t *payload, uint32_t len)
{
    if (s->nnotes == s->notecap) {
        uint32_t cap = s->notecap * 2;
        ws_note *n = realloc(s->notes, cap * sizeof(ws_note));
        if (!n)
            return;
        s->notes = n;
        s->notecap = cap;
    }
    ws_note *n = &s->notes[s->nnotes++];
    n->conn = conn;
    n->kind = kind;
    n->aux = aux;
    n->len = len > 125 ? 125 : len;
    if (n->len)
        memcpy(n->payload, payload, n->len);
}

ws_note *ws_take_notes(ws_scan *s, uint32_t *count)
{
    *count = s->nnotes;
    s->nnotes = 0;
    return s->notes;
}

static void protocol_error(ws_scan *s, uint32_t id, wconn *c, uint32_t why)
{
    c->broken = 1;
    s->ct.protocol_errors++;
    note(s, id, WS_NOTE_PROTOCOL, why, NULL, 0);
}

/* ---- one message ------------------------------------------------------- */

enum { ARRIVED_NEW, ARRIVED_LATE, ARRIVED_DUP, ARRIVED_ANCIENT, ARRIVED_BEFORE_JOIN };

static int arrive(ws_scan *s, uint32_t id, uint32_t pub, uint64_t seq)
{
    wpub *wp = &s->pubs[(size_t)id * s->npub + pub];
    if (seq < wp->start)
        return ARRIVED_BEFORE_JOIN;
    if (seq >= wp->exp) {
        uint64_t gap = seq - wp->exp;
        if (gap) {
            s->ct.lost += gap;
            uint64_t from = wp->exp;
            if (gap > s->ring_mask + 1)
                from = seq - s->ring_mask - 1;
            for (uint64_t q = from; q < seq; q++) {
                wmsg *m = msg_at(s, pub, q);
                if (m) {
                    m->resolved++;
                    msg_check_done(s, pub, m);
                }
            }
        }
        wp->win = (gap + 1 >= WINDOW) ? 1 : ((wp->win << (gap + 1)) | 1);
        wp->exp = seq + 1;
        return ARRIVED_NEW;
    }
    uint64_t back = wp->exp - 1 - seq;
    if (back >= WINDOW)
        return ARRIVED_ANCIENT;
    if (wp->win & (1ULL << back))
        return ARRIVED_DUP;
    wp->win |= 1ULL << back;
    s->ct.lost--;               /* it was counted as a gap when a later one came */
    return ARRIVED_LATE;
}

static void end_message(ws_scan *s, uint32_t id, wconn *c)
{
    uint8_t op = c->mop;
    c->mop = 0;
    if (c->mframes > 1)
        s->ct.fragmented++;
    if (c->role != WS_ROLE_SUB) {
        s->ct.ignored++;
        return;
    }
    if (c->mpos < HEAD) {
        s->ct.corrupted++;
        return;
    }
    uint64_t seq = rd64(c->mhead), ts = rd64(c->mhead + 8);
    uint32_t pub = rd32(c->mhead + 16);
    if (pub >= s->npub || seq >= s->published[pub]) {
        s->ct.corrupted++;      /* no message of ours has this header */
        return;
    }
    int how = arrive(s, id, pub, seq);
    int intact = !c->mbad && c->mpos == s->size;
    if (how == ARRIVED_DUP) {
        s->ct.duplicated++;
        return;
    }
    if (how == ARRIVED_BEFORE_JOIN) {
        if (intact && op == s->opcode)
            s->ct.before_join++;
        else
            s->ct.corrupted++;
        return;
    }
    if (how == ARRIVED_LATE || how == ARRIVED_ANCIENT)
        s->ct.out_of_order++;
    wmsg *m = how == ARRIVED_ANCIENT ? NULL : msg_at(s, pub, seq);
    if (!intact) {
        s->ct.corrupted++;
    } else if (op != s->opcode) {
        s->ct.bad_opcode++;
    } else {
        s->ct.delivered++;
        if (!c->receiving) {
            c->receiving = 1;
            s->ct.receiving++;
        }
        uint64_t lat = s->now > ts ? s->now - ts : 0;
        hist_add(s, 0, lat);
        if (m) {
            m->got++;
            if (lat > m->maxlat)
                m->maxlat = lat;
        }
    }
    if (m && how == ARRIVED_NEW) {
        m->resolved++;
        msg_check_done(s, pub, m);
    }
}

static inline void data_bytes(ws_scan *s, wconn *c, const uint8_t *p, size_t k)
{
    if (c->role != WS_ROLE_SUB) {
        c->mpos += k;
        return;
    }
    if (c->mpos < HEAD) {
        size_t t = HEAD - c->mpos < k ? HEAD - c->mpos : k;
        memcpy(c->mhead + c->mpos, p, t);
        c->mpos += t;
        p += t;
        k -= t;
        if (c->mpos == HEAD)
            c->seed = seed_of(rd64(c->mhead), rd64(c->mhead + 8), rd32(c->mhead + 16));
    }
    if (!k)
        return;
    if (c->mpos + k > s->size)
        c->mbad = 1;
    else if (!c->mbad && !pattern_ok(c->seed, c->mpos, p, k))
        c->mbad = 1;
    c->mpos += k;
}

static void end_frame(ws_scan *s, uint32_t id, wconn *c)
{
    c->in_frame = 0;
    c->hlen = 0;
    switch (c->fop) {
    case 0x8: {
        s->ct.closes++;
        uint32_t code = c->clen >= 2 ? ((uint32_t)c->ctl[0] << 8 | c->ctl[1]) : 1005;
        note(s, id, WS_NOTE_CLOSE, code, c->clen > 2 ? c->ctl + 2 : NULL,
             c->clen > 2 ? c->clen - 2u : 0);
        c->broken = 1;
        c->closed = 1;
        return;
    }
    case 0x9:
        s->ct.pings++;
        note(s, id, WS_NOTE_PING, 0, c->ctl, c->clen);
        return;
    case 0xA:
        s->ct.pongs++;
        return;
    default:
        if (c->ffin)
            end_message(s, id, c);
    }
}

static inline size_t header_need(const uint8_t *h, uint8_t have)
{
    if (have < 2)
        return 2;
    uint8_t l7 = h[1] & 0x7f;
    return 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + ((h[1] & 0x80) ? 4 : 0);
}

/* The header in c->hdr is complete: check it and start the frame. */
static int start_frame(ws_scan *s, uint32_t id, wconn *c)
{
    const uint8_t *h = c->hdr;
    uint8_t fin = h[0] >> 7, op = h[0] & 0x0f, l7 = h[1] & 0x7f;
    uint64_t len = l7;
    if (h[0] & 0x70) {
        protocol_error(s, id, c, WS_ERR_RSV);
        return -1;
    }
    if (h[1] & 0x80) {
        protocol_error(s, id, c, WS_ERR_MASKED);
        return -1;
    }
    if (l7 == 126) {
        len = (uint64_t)h[2] << 8 | h[3];
    } else if (l7 == 127) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | h[2 + i];
        if (len >> 63) {
            protocol_error(s, id, c, WS_ERR_LENGTH);
            return -1;
        }
    }
    if (op >= 0x8) {
        if (op > 0xA) {
            protocol_error(s, id, c, WS_ERR_OPCODE);
            return -1;
        }
        if (!fin || len > 125) {
            protocol_error(s, id, c, WS_ERR_CONTROL);
            return -1;
        }
        c->clen = 0;
    } else if (op == 0) {
        if (!c->mop) {
            protocol_error(s, id, c, WS_ERR_CONTINUATION);
            return -1;
        }
        if (c->mframes < 255)
            c->mframes++;
    } else if (op <= 2) {
        if (c->mop) {
            protocol_error(s, id, c, WS_ERR_INTERLEAVED);
            return -1;
        }
        c->mop = op;
        c->mpos = 0;
        c->mbad = 0;
        c->mframes = 1;
    } else {
        protocol_error(s, id, c, WS_ERR_OPCODE);
        return -1;
    }
    s->ct.frames++;
    c->fop = op;
    c->ffin = fin;
    c->remaining = len;
    c->in_frame = 1;
    if (!len)
        end_frame(s, id, c);
    return 0;
}

static void feed_one(ws_scan *s, uint32_t id, const uint8_t *p, size_t n)
{
    wconn *c = &s->conns[id];
    s->ct.bytes += n;
    if (c->role == WS_ROLE_NONE)
        return;
    while (n && !c->broken) {
        if (!c->in_frame) {
            if (c->hlen == 0 && n >= 2) {
                /* Common case: the whole header is here; parse it in place. */
                size_t need = header_need(p, 2);
                if (n >= need) {
                    memcpy(c->hdr, p, need);
                    p += need;
                    n -= need;
                    start_frame(s, id, c);
                    continue;
                }
            }
            size_t need = header_need(c->hdr, c->hlen);
            while (n && c->hlen < need) {
                c->hdr[c->hlen++] = *p++;
                n--;
                need = header_need(c->hdr, c->hlen);
            }
            if (c->hlen == need)
                start_frame(s, id, c);
            continue;
        }
        size_t k = c->remaining < n ? (size_t)c->remaining : n;
        if (c->fop >= 0x8) {
            memcpy(c->ctl + c->clen, p, k);
            c->clen += (uint8_t)k;
        } else {
            data_bytes(s, c, p, k);
        }
        p += k;
        n -= k;
        c->remaining -= k;
        if (!c->remaining)
            end_frame(s, id, c);
    }
    if (n && c->closed && !c->after_close) {
        /* Bytes after a close frame: the server broke the closing handshake. */
        c->after_close = 1;
        s->ct.protocol_errors++;
        note(s, id, WS_NOTE_PROTOCOL, WS_ERR_AFTER_CLOSE, NULL, 0);
    }
}

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ULL + (uint64_t)t.tv_nsec;
}

int ws_feed(ws_scan *s, uint32_t conn, const uint8_t *data, size_t len, uint64_t now)
{
    if (conn >= s->max_conns)
        return -1;
    s->now = now ? now : now_ns();
    feed_one(s, conn, data, len);
    return (int)s->nnotes;
}

int ws_feed_batch(ws_scan *s, const uint32_t *conns, const uint64_t *offs,
                  const uint32_t *lens, size_t n, const uint8_t *blob, uint64_t now)
{
    s->now = now ? now : now_ns();
    for (size_t i = 0; i < n; i++) {
        if (conns[i] >= s->max_conns)
            return -1;
        feed_one(s, conns[i], blob + offs[i], lens[i]);
    }
    return (int)s->nnotes;
}
