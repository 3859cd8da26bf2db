/* wsscan: WebSocket frame scanning and delivery accounting for the load client.
 *
 * Everything per delivery happens here: Python hands over the bytes of a whole
 * reap and gets counts, notes (pings owed, closes) and latency buckets back.
 * The contract is in wsscan_api.h.
 *
 * Parsing is streaming: a frame header split across reads is gathered in a
 * 14-byte buffer, a payload split across reads (or a message split into
 * continuation frames) is checked as its bytes come, against a pattern that
 * depends only on the message's offset and its header (20 bytes binary, 76 JSON).
 * Nothing of a data message is buffered but its header.
 *
 * A compressed message (permessage-deflate) is inflated as its bytes come, into
 * one scanner-wide output buffer, and each piece that comes out goes through the
 * same checks as uncompressed bytes do. zlib's memory is allocated through
 * z_alloc/z_free, which count it (ws_counts.inflate_bytes).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "wsscan_api.h"

#define HEAD 20                 /* binary: seq(8) ts(8) pub(4) */
#define JH 76                   /* JSON: the header, up to the ticks' [          */
#define JR 75                   /* JSON: one tick                                */
#define JT 12                   /* JSON: {"pad":""}]} without its dashes         */
#define ZOUT 32768              /* inflate output buffer: one window at most, so
                                   inflateGetDictionary fits in it too           */
#define ZPOOL 16                /* free 15-bit inflate streams kept for reuse    */

enum { DEFLATE_NONE, DEFLATE_TAKEOVER, DEFLATE_STANDALONE };

_Static_assert(WS_JSON_MIN == JH + JR + JT, "WS_JSON_MIN: header, one tick, padding");
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
    uint8_t deflate;            /* DEFLATE_*: what the handshake agreed         */
    uint8_t zbits;              /* DEFLATE_TAKEOVER: the server's window bits   */
    uint8_t mz;                 /* the message in progress is compressed (RSV1) */
    uint8_t zstop;              /* no more inflating for this message (error or
                                   past size): its rest is skipped              */
    uint8_t zend;               /* its deflate data ended (a BFINAL block)      */
    uint8_t zlost;              /* DEFLATE_TAKEOVER: a message failed to inflate,
                                   so the window later ones refer to is lost    */
    uint8_t hdr[14];
    uint8_t mhead[JH];          /* the message's header (s->head bytes)         */
    uint8_t ctl[125];
    uint64_t remaining;         /* payload bytes left in the current frame      */
    uint64_t mpos;              /* bytes of the current message so far (inflated
                                   bytes when compressed)                       */
    uint64_t mwire;             /* its frame bytes, as received                 */
    uint64_t seed;              /* pattern seed, once mpos >= s->head           */
    z_stream *z;                /* inflate stream: TAKEOVER from the first
                                   compressed message to the connection's end;
                                   STANDALONE while a message is arriving       */
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

/* ringio's rio_send (ringio_api.h), reached by address: the scanner does not link
 * ringio, and ringio knows nothing of WebSocket. */
struct rio_loop;
typedef int (*ws_send_fn)(struct rio_loop *loop, uint32_t conn, const char *data, size_t len,
                          uint64_t cap, int mode);
#define RIO_SEND_FORCE 1        /* ringio_api.h: past the queue's cap (control frames) */

struct ws_scan {
    uint32_t max_conns, npub, size, opcode;
    int fmt;                    /* WS_FMT_*                                     */
    uint32_t head;              /* header bytes of fmt: HEAD or JH              */
    uint64_t ring_mask;
    uint32_t ring_bits;
    wconn *conns;
    wpub *pubs;                 /* max_conns * npub                             */
    wmsg *ring;                 /* npub * (ring_mask + 1)                       */
    uint64_t *published;        /* per publisher                                */
    uint64_t *tail;             /* per publisher: oldest maybe-unfinished seq   */
    uint8_t *deaf;              /* per publisher: on another channel than this
                                   process's subscribers (ws_set_deaf)          */
    ws_counts ct;
    uint64_t *hist;             /* 4 * NBUCKETS                                 */
    ws_note *notes;
    uint32_t nnotes, notecap;
    uint64_t now;
    uint32_t peers;             /* lead: records owed per message (ws_set_team) */
    int log_done;               /* follower: log finished messages              */
    ws_done *done;
    uint32_t ndone, donecap;
    z_stream *pool[ZPOOL];      /* free inflate streams (15-bit window, reset)  */
    uint32_t npool;
    uint8_t zout[ZOUT];         /* inflated bytes on their way to the checks    */
    ws_send_fn send;            /* answers pings when set (ws_answer_pings)     */
    struct rio_loop *send_loop;
    uint64_t mask_state;        /* xorshift64: the pongs' masking keys          */
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

/* ---- the JSON format (layout in wsscan_api.h) --------------------------- */

#define JSON_TICK                                                                   \
    "{\"sym\":\"AAPL\",\"bid\":\"0187.46\",\"ask\":\"0187.48\",\"bq\":\"003300\","   \
    "\"aq\":\"002500\"},"
#define JSON_HEAD                                                                   \
    "{\"seq\":\"0000000000000000\",\"ts\":\"0000000000000000\",\"pub\":\"00000000\","  \
    "\"ticks\":["
_Static_assert(sizeof(JSON_TICK) == JR + 1, "JR is the length of a tick");
_Static_assert(sizeof(JSON_HEAD) == JH + 1, "JH is the length of the header");
static const char SYMBOLS[8][5] = {"AAPL", "MSFT", "AMZN", "NVDA", "GOOG", "META", "TSLA",
                                   "INTC"};
static const uint16_t BASE_PRICE[8] = {187, 412, 178, 903, 141, 497, 251, 34};

static void put_dec(uint8_t *p, unsigned v, int width)
{
    for (int i = width - 1; i >= 0; i--, v /= 10)
        p[i] = (uint8_t)('0' + v % 10);
}

static void put_hex(uint8_t *p, uint64_t v, int width)
{
    for (int i = width - 1; i >= 0; i--, v >>= 4)
        p[i] = (uint8_t)"0123456789abcdef"[v & 15];
}

/* Lowercase hex only (what put_hex writes); 0 for anything else. */
static int get_hex(const uint8_t *p, int width, uint64_t *v)
{
    uint64_t x = 0;
    for (int i = 0; i < width; i++) {
        uint8_t ch = p[i];
        if (ch >= '0' && ch <= '9')
            x = x << 4 | (uint64_t)(ch - '0');
        else if (ch >= 'a' && ch <= 'f')
            x = x << 4 | (uint64_t)(ch - 'a' + 10);
        else
            return 0;
    }
    *v = x;
    return 1;
}

static void json_head(uint8_t *out, uint64_t seq, uint64_t ts, uint32_t pub)
{
    memcpy(out, JSON_HEAD, JH);
    put_hex(out + 8, seq, 16);
    put_hex(out + 32, ts, 16);
    put_hex(out + 57, pub, 8);
}

/* Tick j: a symbol, its price near that symbol's base, a spread of 1-4 cents and two
 * quantities in hundreds. Few random digits among repeated names: a feed's ratio. */
static void json_tick(uint8_t *out, uint64_t seed, uint64_t j)
{
    uint64_t h = mix64(seed + j * GOLD);
    unsigned sym = h & 7, cents = (unsigned)((h >> 3) % 96), spread = 1 + ((h >> 10) & 3);
    memcpy(out, JSON_TICK, JR);
    memcpy(out + 8, SYMBOLS[sym], 4);
    put_dec(out + 21, BASE_PRICE[sym], 4);
    put_dec(out + 26, cents, 2);
    put_dec(out + 37, BASE_PRICE[sym], 4);
    put_dec(out + 42, cents + spread, 2);
    put_dec(out + 52, 1 + (unsigned)((h >> 12) % 40), 4);
    put_dec(out + 66, 1 + (unsigned)((h >> 18) % 40), 4);
}

/* The expected bytes [pos, pos + k) of a `size`-byte JSON message, JH <= pos and
 * pos + k <= size: ticks, then the padding object that makes up the size. */
static void json_span(uint64_t seed, uint32_t size, uint64_t pos, uint8_t *out, size_t k)
{
    uint64_t ticks_end = JH + (uint64_t)(size - JH - JT) / JR * JR;
    uint64_t dashes = size - ticks_end - JT;
    uint8_t tick[JR];
    while (k) {
        size_t m = 1;
        if (pos < ticks_end) {
            uint64_t off = (pos - JH) % JR;
            json_tick(tick, seed, (pos - JH) / JR);
            m = JR - off < k ? (size_t)(JR - off) : k;
            memcpy(out, tick + off, m);
        } else {
            uint64_t i = pos - ticks_end;
            *out = i < 8 ? (uint8_t)"{\"pad\":\""[i]
                 : i < 8 + dashes ? '-' : (uint8_t)"\"}]}"[i - 8 - dashes];
        }
        out += m;
        pos += m;
        k -= m;
    }
}

/* Do k bytes at message offset pos (>= JH, pos + k <= size) match? */
static int json_ok(uint64_t seed, uint32_t size, uint64_t pos, const uint8_t *p, size_t k)
{
    uint8_t want[256];
    while (k) {
        size_t m = k < sizeof(want) ? k : sizeof(want);
        json_span(seed, size, pos, want, m);
        if (memcmp(want, p, m))
            return 0;
        p += m;
        pos += m;
        k -= m;
    }
    return 1;
}

/* ---- either format ----------------------------------------------------- */

/* The numbers in a message's header (s->head bytes); 0 if it is not a header of fmt. */
static int head_parse(int fmt, const uint8_t *h, uint64_t *seq, uint64_t *ts, uint32_t *pub)
{
    if (fmt == WS_FMT_BINARY) {
        *seq = rd64(h);
        *ts = rd64(h + 8);
        *pub = rd32(h + 16);
        return 1;
    }
    uint64_t p;
    uint8_t again[JH];
    if (!get_hex(h + 8, 16, seq) || !get_hex(h + 32, 16, ts) || !get_hex(h + 57, 8, &p))
        return 0;
    *pub = (uint32_t)p;
    json_head(again, *seq, *ts, *pub);      /* and every byte around the numbers */
    return !memcmp(again, h, JH);
}

static inline uint32_t head_of(int fmt)
{
    return fmt == WS_FMT_JSON ? JH : HEAD;
}

static inline uint32_t min_size(int fmt)
{
    return fmt == WS_FMT_JSON ? WS_JSON_MIN : HEAD;
}

static inline int body_ok(int fmt, uint64_t seed, uint32_t size, uint64_t pos,
                          const uint8_t *p, size_t k)
{
    return fmt == WS_FMT_JSON ? json_ok(seed, size, pos, p, k) : pattern_ok(seed, pos, p, k);
}

void ws_payload(uint8_t *out, uint32_t pub, uint64_t seq, uint64_t ts, uint32_t size, int fmt)
{
    if (fmt == WS_FMT_JSON) {
        json_head(out, seq, ts, pub);
        json_span(seed_of(seq, ts, pub), size, JH, out + JH, size - JH);
        return;
    }
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
                uint32_t size, int opcode, int masked, uint32_t mask_key, int fmt)
{
    size_t h = 2;
    if (fmt == WS_FMT_JSON && size < WS_JSON_MIN)
        return 0;
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
    ws_payload(pl, pub, seq, ts, size, fmt);
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

int ws_check(const uint8_t *p, size_t len, uint32_t size, int fmt)
{
    uint64_t seq, ts;
    uint32_t pub, head = head_of(fmt);
    if (len != size || len < min_size(fmt) || !head_parse(fmt, p, &seq, &ts, &pub))
        return 0;
    return body_ok(fmt, seed_of(seq, ts, pub), size, head, p + head, len - head);
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

/* ---- inflate streams ---------------------------------------------------- */

/* zlib allocates through these, so that ws_counts.inflate_bytes is what it holds.
 * Each block starts with its size (16 bytes keep the block's alignment). */
static voidpf z_alloc(voidpf opaque, uInt items, uInt size)
{
    ws_scan *s = opaque;
    size_t n = (size_t)items * size;
    uint64_t *b = malloc(n + 16);
    if (!b)
        return Z_NULL;
    b[0] = n;
    s->ct.inflate_bytes += n;
    return b + 2;
}

static void z_free(voidpf opaque, voidpf p)
{
    ws_scan *s = opaque;
    uint64_t *b = (uint64_t *)p - 2;
    s->ct.inflate_bytes -= b[0];
    free(b);
}

/* A raw inflate stream with a 2^bits window; NULL without memory. */
static z_stream *zs_new(ws_scan *s, int bits)
{
    z_stream *z = z_alloc(s, 1, sizeof(z_stream));
    if (!z)
        return NULL;
    memset(z, 0, sizeof(*z));
    z->zalloc = z_alloc;
    z->zfree = z_free;
    z->opaque = s;
    if (inflateInit2(z, -bits) != Z_OK) {   /* negative: raw deflate, no zlib header */
        z_free(s, z);
        return NULL;
    }
    s->ct.inflate_streams++;
    return z;
}

static void zs_free(ws_scan *s, z_stream *z)
{
    inflateEnd(z);
    z_free(s, z);
    s->ct.inflate_streams--;
}

/* The connection's stream for the message in progress, made or taken from the pool
 * when it has none; NULL without memory. A standalone message can use any window:
 * 15 reads every smaller one. */
static z_stream *zs_get(ws_scan *s, wconn *c)
{
    if (c->z)
        return c->z;
    if (c->deflate == DEFLATE_STANDALONE)
        c->z = s->npool ? s->pool[--s->npool] : zs_new(s, 15);
    else
        c->z = zs_new(s, c->zbits);
    return c->z;
}

/* The connection lets its stream go: back to the pool when it has a 15-bit window and
 * the pool has room (reset, so it holds nothing of this connection), else freed. */
static void zs_put(ws_scan *s, wconn *c)
{
    z_stream *z = c->z;
    if (!z)
        return;
    c->z = NULL;
    int bits = c->deflate == DEFLATE_STANDALONE ? 15 : c->zbits;
    if (bits == 15 && s->npool < ZPOOL && inflateReset(z) == Z_OK)
        s->pool[s->npool++] = z;
    else
        zs_free(s, z);
}

/* ---- lifecycle --------------------------------------------------------- */

ws_scan *ws_new(uint32_t max_conns, uint32_t npub, uint32_t size, uint32_t opcode,
                uint32_t ring_bits, int fmt)
{
    if (!max_conns || !npub || npub > 4096 || ring_bits < 4 || ring_bits > 24
        || (opcode != 1 && opcode != 2) || (fmt != WS_FMT_BINARY && fmt != WS_FMT_JSON)
        || size < min_size(fmt))
        return NULL;
    ws_scan *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->max_conns = max_conns;
    s->npub = npub;
    s->size = size;
    s->opcode = opcode;
    s->fmt = fmt;
    s->head = head_of(fmt);
    s->ring_mask = (1ULL << ring_bits) - 1;
    s->ring_bits = ring_bits;
    s->conns = calloc(max_conns, sizeof(wconn));
    s->pubs = calloc((size_t)max_conns * npub, sizeof(wpub));
    s->ring = calloc((size_t)npub << ring_bits, sizeof(wmsg));
    s->published = calloc(npub, sizeof(uint64_t));
    s->tail = calloc(npub, sizeof(uint64_t));
    s->deaf = calloc(npub, 1);
    s->hist = calloc(4 * NBUCKETS, sizeof(uint64_t));
    s->notecap = 64;
    s->notes = malloc(s->notecap * sizeof(ws_note));
    if (!s->conns || !s->pubs || !s->ring || !s->published || !s->tail || !s->deaf
        || !s->hist || !s->notes) {
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
    for (uint32_t i = 0; s->conns && i < s->max_conns; i++)
        if (s->conns[i].z)
            zs_free(s, s->conns[i].z);
    while (s->npool)
        zs_free(s, s->pool[--s->npool]);
    free(s->conns);
    free(s->pubs);
    free(s->ring);
    free(s->published);
    free(s->tail);
    free(s->deaf);
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

int ws_set_deaf(ws_scan *s, uint32_t pub, int deaf)
{
    if (pub >= s->npub)
        return -1;
    s->deaf[pub] = deaf != 0;
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
    zs_put(s, c);
    memset(c, 0, sizeof(*c));
    c->role = (uint8_t)role;
    wpub *wp = &s->pubs[(size_t)id * s->npub];
    for (uint32_t p = 0; p < s->npub; p++) {
        wp[p].exp = wp[p].start = s->published[p];
        wp[p].win = ~0ULL;
    }
    return 0;
}

int ws_conn_deflate(ws_scan *s, uint32_t id, int no_takeover, uint32_t bits)
{
    if (id >= s->max_conns || bits < 8 || bits > 15)
        return -1;
    wconn *c = &s->conns[id];
    zs_put(s, c);
    c->deflate = no_takeover ? DEFLATE_STANDALONE : DEFLATE_TAKEOVER;
    c->zbits = (uint8_t)(bits < 9 ? 9 : bits);
    c->zlost = 0;
    return 0;
}

void ws_conn_gone(ws_scan *s, uint32_t id)
{
    if (id >= s->max_conns)
        return;
    wconn *c = &s->conns[id];
    zs_put(s, c);
    if (c->role == WS_ROLE_SUB) {
        wpub *wp = &s->pubs[(size_t)id * s->npub];
        for (uint32_t p = 0; p < s->npub; p++) {
            if (s->deaf[p])
                continue;
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
            if (!s->deaf[p] && s->published[p] > wp[p].exp) {
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
    zs_put(s, c);               /* nothing more is parsed: no stream is needed */
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
    if (c->mz)
        s->ct.compressed++;
    uint64_t seq, ts;
    uint32_t pub;
    if (c->mpos < s->head || !head_parse(s->fmt, c->mhead, &seq, &ts, &pub)) {
        s->ct.corrupted++;
        return;
    }
    if (pub >= s->npub || seq >= s->published[pub] || s->deaf[pub]) {
        s->ct.corrupted++;      /* no message of ours (or of this channel) has this header */
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
        s->ct.wire_bytes += c->mwire;
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

/* k bytes of the message's payload (inflated, if it is compressed): checked. */
static inline void data_bytes(ws_scan *s, wconn *c, const uint8_t *p, size_t k)
{
    if (c->role != WS_ROLE_SUB) {
        c->mpos += k;
        return;
    }
    if (c->mpos < s->head) {
        size_t t = s->head - c->mpos < k ? s->head - c->mpos : k;
        memcpy(c->mhead + c->mpos, p, t);
        c->mpos += t;
        p += t;
        k -= t;
        if (c->mpos == s->head) {
            uint64_t seq, ts;
            uint32_t pub;
            if (head_parse(s->fmt, c->mhead, &seq, &ts, &pub))
                c->seed = seed_of(seq, ts, pub);
            else
                c->mbad = 1;    /* end_message counts it */
        }
    }
    if (!k)
        return;
    if (c->mpos + k > s->size)
        c->mbad = 1;
    else if (!c->mbad && !body_ok(s->fmt, c->seed, s->size, c->mpos, p, k))
        c->mbad = 1;
    c->mpos += k;
}

/* ---- compressed messages (RFC 7692) -------------------------------------- */

/* Inflating this message is over (zlib refused it, or it grew past size): the message
 * is corrupted, and a connection that keeps its window has lost it. */
static void inflate_stop(ws_scan *s, wconn *c)
{
    c->zstop = 1;
    c->mbad = 1;
    if (c->deflate == DEFLATE_TAKEOVER) {
        c->zlost = 1;
        zs_put(s, c);
    }
}

/* k compressed bytes of the message in progress (a subscriber's): inflate them and
 * check what comes out. Never more than size + 1 bytes come out of one message: one
 * past the size is enough to know it is too long (a bomb costs no more than that). */
static void inflate_bytes(ws_scan *s, wconn *c, const uint8_t *p, size_t k)
{
    if (c->zstop || !k)
        return;
    if (c->zend) {              /* deflate data after the final block */
        s->ct.inflate_errors++;
        inflate_stop(s, c);
        return;
    }
    z_stream *z = zs_get(s, c);
    if (!z) {                   /* no memory for a stream */
        s->ct.inflate_errors++;
        inflate_stop(s, c);
        return;
    }
    z->next_in = (Bytef *)p;    /* zlib does not write to its input */
    z->avail_in = (uInt)k;      /* k is one read's bytes: far below 4 GiB */
    do {
        uint64_t room = s->size + 1 - c->mpos;   /* mpos <= size: else stopped */
        if (room > ZOUT)
            room = ZOUT;
        z->next_out = s->zout;
        z->avail_out = (uInt)room;
        int rc = inflate(z, Z_SYNC_FLUSH);
        size_t got = (size_t)room - z->avail_out;
        if (got)
            data_bytes(s, c, s->zout, got);
        if (c->mpos > s->size) {
            s->ct.inflate_oversize++;
            inflate_stop(s, c);
            return;
        }
        if (rc == Z_STREAM_END) {
            c->zend = 1;        /* the sender ended with BFINAL: allowed, and final */
            if (z->avail_in) {
                s->ct.inflate_errors++;
                inflate_stop(s, c);
            }
            return;
        }
        if (rc == Z_BUF_ERROR)  /* all input taken, no output pending: wait for more */
            return;
        if (rc != Z_OK) {       /* Z_DATA_ERROR, Z_MEM_ERROR, Z_NEED_DICT... */
            s->ct.inflate_errors++;
            inflate_stop(s, c);
            return;
        }
        /* Z_OK: go on while input is left, or the output buffer filled (more may be
         * pending inside zlib even with no input left). */
    } while (z->avail_in || z->avail_out == 0);
}

/* The compressed message's last frame ended: put back the 0x00 0x00 0xff 0xff its
 * sender removed (RFC 7692 section 7.2.2), which makes zlib give out the rest. Then
 * a standalone message's stream goes back to the pool; a connection that keeps its
 * window keeps it, across a BFINAL block too (zlib needs a reset after one, which
 * would drop the window: it is taken out first and put back as the dictionary). */
static void inflate_end(ws_scan *s, wconn *c)
{
    static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};
    if (!c->zstop && !c->zend)
        inflate_bytes(s, c, tail, sizeof(tail));
    if (c->deflate == DEFLATE_STANDALONE) {
        zs_put(s, c);
    } else if (c->zend && c->z) {
        uInt n = 0;
        if (inflateGetDictionary(c->z, s->zout, &n) != Z_OK || inflateReset(c->z) != Z_OK
            || (n && inflateSetDictionary(c->z, s->zout, n) != Z_OK)) {
            s->ct.inflate_errors++;
            c->zlost = 1;       /* this message is whole; the next ones cannot be */
            zs_put(s, c);
        }
    }
    c->zend = 0;
    c->zstop = 0;
}

/* RFC 6455 section 5.5.3: a pong with the ping's payload, masked as every client
 * frame is (section 5.3: a fresh, unpredictable key per frame). */
static int answer_ping(ws_scan *s, uint32_t id, const wconn *c)
{
    uint8_t f[2 + 4 + 125];
    uint64_t x = s->mask_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    s->mask_state = x;
    f[0] = 0x80 | 0xA;
    f[1] = (uint8_t)(0x80 | c->clen);
    memcpy(f + 2, &x, 4);
    for (uint32_t i = 0; i < c->clen; i++)
        f[6 + i] = c->ctl[i] ^ f[2 + (i & 3)];
    return s->send(s->send_loop, id, (const char *)f, 6u + c->clen, 0, RIO_SEND_FORCE);
}

int ws_answer_pings(ws_scan *s, uintptr_t send, uintptr_t loop)
{
    if (send && !loop)
        return -1;
    s->send = (ws_send_fn)send;
    s->send_loop = (struct rio_loop *)loop;
    if (!s->mask_state) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        s->mask_state = mix64((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32)
                              ^ (uintptr_t)s) | 1;
    }
    return 0;
}

static void end_frame(ws_scan *s, uint32_t id, wconn *c)
{
    c->in_frame = 0;
    c->hlen = 0;
    switch (c->fop) {
    case 0x8: {
        s->ct.closes++;
        zs_put(s, c);           /* nothing more is parsed */
        uint32_t code = c->clen >= 2 ? ((uint32_t)c->ctl[0] << 8 | c->ctl[1]) : 1005;
        note(s, id, WS_NOTE_CLOSE, code, c->clen > 2 ? c->ctl + 2 : NULL,
             c->clen > 2 ? c->clen - 2u : 0);
        c->broken = 1;
        c->closed = 1;
        return;
    }
    case 0x9:
        s->ct.pings++;
        if (!s->send || answer_ping(s, id, c) < 0)
            note(s, id, WS_NOTE_PING, 0, c->ctl, c->clen);
        return;
    case 0xA:
        s->ct.pongs++;
        return;
    default:
        if (!c->ffin)
            return;
        if (c->mz && c->role == WS_ROLE_SUB)
            inflate_end(s, c);
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
    uint8_t rsv1 = (h[0] & 0x40) != 0;
    uint64_t len = l7;
    /* RSV1 is permessage-deflate's "compressed" bit, and only on the first frame of a
     * data message (RFC 7692 section 6.1); every other RSV bit is an error. */
    if ((h[0] & 0x30) || (rsv1 && (!c->deflate || (op != 1 && op != 2)))) {
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
        c->mwire += header_need(h, 2) + len;
    } else if (op <= 2) {
        if (c->mop) {
            protocol_error(s, id, c, WS_ERR_INTERLEAVED);
            return -1;
        }
        c->mop = op;
        c->mpos = 0;
        c->mbad = 0;
        c->mframes = 1;
        c->mwire = header_need(h, 2) + len;
        c->mz = rsv1;
        c->zstop = 0;
        c->zend = 0;
        if (rsv1 && c->zlost) {
            c->zstop = 1;       /* its window is gone: it cannot be inflated */
            c->mbad = 1;
        }
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
        } else if (c->mz && c->role == WS_ROLE_SUB) {
            inflate_bytes(s, c, p, k);
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
