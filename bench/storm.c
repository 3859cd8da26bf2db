/* storm.c: an independent WebSocket connection-storm client (epoll, one thread).
 *
 * It shares no code with ringcast, so that it measures any server the same way
 * (bench/storms.py runs it against ringcast, bun and socketify). It opens N
 * WebSocket subscribers to ws://HOST:PORT/CHANNEL, at most C handshakes in
 * flight, each from the next source address of a range (so that several
 * processes, each with its own range, can go past one address's ephemeral
 * ports), checks every answer is "HTTP/1.1 101" with the right
 * Sec-WebSocket-Accept, and then, by mode:
 *
 *   connect  reports, waits --linger seconds (or for SIGTERM), closes all.
 *   hold     reads frames and counts messages per connection until SIGTERM or
 *            --duration; every message must reach every connection.
 *   storm    waits until every connection has seen --messages messages, closes
 *            --fraction of them at once, reconnects them at once, and reports
 *            how long until all are back (101) and until every reconnected one
 *            has received a message (someone must keep publishing: storms.py).
 *
 * Output, on stdout, one JSON object per line ("event" says which):
 *   connected  once the first N are open (or have failed): counts, times, latency
 *   received   every time all open connections have seen one more message
 *   dropped    (storm) when the connections have been closed
 *   back       (storm) when every dropped one is open again (or has failed)
 *   report     last: everything, including the storm's result
 * Times "t_*_ns" are CLOCK_MONOTONIC, the clock of Python's time.monotonic_ns(),
 * so that the runner can compare them with its own.
 *
 * It answers pings with pongs, never sends data, and never retries a failed
 * handshake unless --retry-ms is given. Build: gcc -O2 -Wall -Wextra -o storm storm.c
 * (SHA-1 is below, so there is nothing to link).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24 /* Linux 4.2; older libc headers lack it */
#endif

#define RESP_MAX 2048     /* longest 101 answer we accept, header included */
#define MAX_EVENTS 1024
#define READ_BUF (64 * 1024)

/* ---- SHA-1 and base64, for Sec-WebSocket-Accept (public domain) ---------- */

static uint32_t rol(uint32_t x, int n)
{
    return (x << n) | (x >> (32 - n));
}

static void sha1_block(uint32_t h[5], const uint8_t *p)
{
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 80; i++)
        w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5A827999;
        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ED9EBA1;
        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8F1BBCDC;
        } else {
            f = b ^ c ^ d;
            k = 0xCA62C1D6;
        }
        uint32_t t = rol(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = rol(b, 30);
        b = a;
        a = t;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

static void sha1(const uint8_t *msg, size_t len, uint8_t out[20])
{
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    uint8_t block[64];
    size_t off = 0;
    for (; len - off >= 64; off += 64)
        sha1_block(h, msg + off);
    size_t rest = len - off;
    memset(block, 0, sizeof block);
    memcpy(block, msg + off, rest);
    block[rest] = 0x80;
    if (rest >= 56) { /* no room for the length: one more block */
        sha1_block(h, block);
        memset(block, 0, sizeof block);
    }
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++)
        block[63 - i] = (uint8_t)(bits >> (8 * i));
    sha1_block(h, block);
    for (int i = 0; i < 20; i++)
        out[i] = (uint8_t)(h[i / 4] >> (24 - 8 * (i % 4)));
}

static void base64(const uint8_t *in, size_t n, char *out)
{
    static const char tbl[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? tbl[v & 63] : '=';
    }
    out[o] = '\0';
}

/* The Sec-WebSocket-Accept a server must answer to `key` (RFC 6455, 4.2.2). */
static void accept_for(const char *key, char out[29])
{
    char buf[128];
    uint8_t digest[20];
    int n = snprintf(buf, sizeof buf, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    sha1((const uint8_t *)buf, (size_t)n, digest);
    base64(digest, sizeof digest, out);
}

/* ---- configuration, connections, counters -------------------------------- */

enum mode { M_CONNECT, M_HOLD, M_STORM };
static const char *const mode_names[] = {"connect", "hold", "storm"};

static struct {
    enum mode mode;
    const char *host, *channel, *label, *latencies;
    int port;
    uint32_t n, concurrency;
    double handshake_timeout, duration, linger, fraction;
    uint32_t storm_after; /* messages every connection must have seen first */
    int64_t retry_ns;     /* 0: a failed handshake stays failed */
} cfg = {
    .host = "127.0.0.1", .channel = "storm", .label = "", .n = 1000, .concurrency = 512,
    .handshake_timeout = 10, .duration = 300, .linger = 0, .fraction = 1.0, .storm_after = 1,
};

enum state { S_IDLE, S_CONNECTING, S_UPGRADING, S_OPEN, S_DEAD };

/* One subscriber. Kept small: a process holds up to ~20,000 of them. */
struct conn {
    int fd;
    uint8_t state;
    uint8_t reconnected;  /* storm: dropped and opened again */
    uint8_t in_payload;   /* reading a frame's payload (else its header) */
    uint8_t in_message;   /* a fragmented data message is not finished */
    uint8_t hdr_len;      /* bytes of the current frame header in hdr */
    uint8_t opcode, fin;  /* of the current frame */
    uint8_t ctrl_len;     /* bytes of a control frame's payload in ctrl */
    uint16_t req_sent;    /* bytes of the upgrade request sent */
    uint16_t resp_len;
    uint32_t messages;    /* complete data messages since it opened */
    uint64_t payload_left;
    int64_t t_start;      /* connect() called, or when a retry is due */
    int32_t prev, next;   /* in the list of handshakes in flight (oldest first) */
    char *resp;           /* the answer's header, only during the handshake */
    uint8_t hdr[14];
    uint8_t ctrl[125];
};

/* What happened to the handshakes of one phase (the first opening, the storm's). */
struct phase {
    uint32_t opened, failed, refused, reset, eof, timeout, status, bad_accept, protocol,
        local, retries;
    int last_status, last_errno;
    int64_t t_first, t_last; /* first connect(), last 101 */
    int64_t *lat;            /* handshake latencies, ns */
    uint32_t n_lat;
    struct rusage ru0, ru1;  /* this process's CPU around the phase */
};

/* What happened to open connections. */
static struct {
    uint64_t messages, pings, pongs_failed, frames;
    uint32_t protocol_errors, server_closes, eof, reset, other;
    int last_close_code, last_errno;
    char first_error[96];
} after;

static struct conn *conns;
static struct sockaddr_in server, *srcs;
static uint32_t n_srcs;
static char request[512], expected_accept[29];
static size_t request_len;
static int ep = -1;
static uint8_t rbuf[READ_BUF];
static volatile sig_atomic_t stop_signal;

/* FIFO queues of connection indices; a connection is in at most one at a time. */
struct queue {
    uint32_t *items, head, len, cap;
};
static struct queue pending, retrying; /* to open now; to open at their t_start */

static struct phase first, storm_phase, *ph = &first;
static uint32_t inflight, open_count;
static int32_t fl_head = -1, fl_tail = -1; /* handshakes in flight, oldest first */
static uint32_t level = 1, at_level;       /* open connections with >= level messages */
static uint32_t dropped, back, receiving, back_lost; /* storm: reconnected ones */
static int64_t t_dropped, t_last_receiving, t_start_ns;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "storm: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void push(struct queue *q, uint32_t i)
{
    q->items[(q->head + q->len++) % q->cap] = i;
}

static uint32_t pop(struct queue *q)
{
    uint32_t i = q->items[q->head];
    q->head = (q->head + 1) % q->cap;
    q->len--;
    return i;
}

static void flight_add(uint32_t i)
{
    conns[i].prev = fl_tail;
    conns[i].next = -1;
    if (fl_tail >= 0)
        conns[fl_tail].next = (int32_t)i;
    else
        fl_head = (int32_t)i;
    fl_tail = (int32_t)i;
    inflight++;
}

static void flight_remove(uint32_t i)
{
    struct conn *c = &conns[i];
    if (c->prev >= 0)
        conns[c->prev].next = c->next;
    else
        fl_head = c->next;
    if (c->next >= 0)
        conns[c->next].prev = c->prev;
    else
        fl_tail = c->prev;
    inflight--;
}

/* ---- handshakes ----------------------------------------------------------- */

enum failure { F_REFUSED, F_RESET, F_EOF, F_TIMEOUT, F_STATUS, F_ACCEPT, F_PROTOCOL, F_LOCAL };

static enum failure classify(int err)
{
    switch (err) {
    case ECONNREFUSED:
        return F_REFUSED;
    case ECONNRESET:
    case EPIPE:
        return F_RESET;
    case ETIMEDOUT:
        return F_TIMEOUT;
    default:
        return F_LOCAL; /* EADDRNOTAVAIL (no port left), EMFILE, ... */
    }
}

/* A handshake did not end in a valid 101: count it, close, maybe try again later. */
static void handshake_failed(uint32_t i, enum failure why, int err, int64_t now)
{
    struct conn *c = &conns[i];
    ph->failed++;
    switch (why) {
    case F_REFUSED: ph->refused++; break;
    case F_RESET: ph->reset++; break;
    case F_EOF: ph->eof++; break;
    case F_TIMEOUT: ph->timeout++; break;
    case F_STATUS: ph->status++; ph->last_status = err; break;
    case F_ACCEPT: ph->bad_accept++; break;
    case F_PROTOCOL: ph->protocol++; break;
    case F_LOCAL: ph->local++; ph->last_errno = err; break;
    }
    if (c->state == S_CONNECTING || c->state == S_UPGRADING)
        flight_remove(i);
    if (c->fd >= 0 && close(c->fd) < 0)
        die("close");
    c->fd = -1;
    free(c->resp);
    c->resp = NULL;
    if (cfg.retry_ns > 0) {
        c->state = S_IDLE;
        c->t_start = now + cfg.retry_ns;
        push(&retrying, i);
        ph->retries++;
    } else {
        c->state = S_DEAD;
    }
}

static int send_request(uint32_t i, int64_t now)
{
    struct conn *c = &conns[i];
    ssize_t w = send(c->fd, request + c->req_sent, request_len - c->req_sent, MSG_NOSIGNAL);
    if (w < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return 0; /* still connecting (or no room): EPOLLOUT will come */
        handshake_failed(i, classify(errno), errno, now);
        return -1;
    }
    c->req_sent += (uint16_t)w;
    if (c->req_sent == request_len)
        c->state = S_UPGRADING;
    return 0;
}

static void start_connect(uint32_t i, int64_t now)
{
    struct conn *c = &conns[i];
    *c = (struct conn){.fd = -1, .state = S_CONNECTING, .reconnected = c->reconnected,
                       .t_start = now, .prev = -1, .next = -1};
    if (!ph->t_first)
        ph->t_first = now;
    flight_add(i);
    c->resp = malloc(RESP_MAX);
    if (!c->resp)
        die("malloc");
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        handshake_failed(i, F_LOCAL, errno, now);
        return;
    }
    if (n_srcs) {
        /* Bind the address only; the port is picked at connect(), per destination,
         * so the same ports can serve every source address. */
        int one = 1;
        const struct sockaddr_in *src = &srcs[i % n_srcs];
        if (setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one) < 0 ||
            bind(c->fd, (const struct sockaddr *)src, sizeof *src) < 0) {
            handshake_failed(i, F_LOCAL, errno, now);
            return;
        }
    }
    if (connect(c->fd, (const struct sockaddr *)&server, sizeof server) < 0 &&
        errno != EINPROGRESS) {
        handshake_failed(i, classify(errno), errno, now);
        return;
    }
    /* On loopback the TCP handshake has usually finished by now: sending at once
     * saves a trip through epoll; EAGAIN means it has not, and EPOLLOUT will say. */
    if (send_request(i, now) < 0)
        return;
    /* Edge-triggered, IN and OUT for the whole life of the socket: no epoll_ctl
     * but this one per connection. */
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                             .data.u32 = i};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        handshake_failed(i, F_LOCAL, errno, now);
}

static void record_open(uint32_t i, int64_t now)
{
    struct conn *c = &conns[i];
    flight_remove(i);
    free(c->resp);
    c->resp = NULL;
    c->state = S_OPEN;
    open_count++;
    ph->opened++;
    ph->t_last = now;
    ph->lat[ph->n_lat++] = now - c->t_start;
    if (c->reconnected)
        back++;
}

/* Check a complete answer header; 1 if it is a valid 101, else fails the handshake. */
static int check_answer(uint32_t i, int64_t now)
{
    struct conn *c = &conns[i];
    const char *r = c->resp;
    if (strncmp(r, "HTTP/1.1 ", 9) != 0) {
        handshake_failed(i, F_PROTOCOL, 0, now);
        return 0;
    }
    int code = atoi(r + 9);
    if (code != 101) {
        handshake_failed(i, F_STATUS, code, now);
        return 0;
    }
    for (const char *line = strstr(r, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
        const char *h = line + 2;
        if (strncasecmp(h, "sec-websocket-accept:", 21) != 0)
            continue;
        h += 21;
        while (*h == ' ' || *h == '\t')
            h++;
        if (strncmp(h, expected_accept, 28) == 0 && (h[28] == '\r' || h[28] == ' '))
            return 1;
        break;
    }
    handshake_failed(i, F_ACCEPT, 0, now);
    return 0;
}

/* Feed answer bytes. Returns how many of them belonged to the answer's header
 * (the rest are frames), or -1 when the connection is gone or not open yet. */
static ssize_t feed_answer(uint32_t i, const uint8_t *p, size_t n, int64_t now)
{
    struct conn *c = &conns[i];
    size_t old = c->resp_len, room = RESP_MAX - 1 - old, take = n < room ? n : room;
    memcpy(c->resp + old, p, take);
    c->resp_len = (uint16_t)(old + take);
    c->resp[c->resp_len] = '\0';
    size_t from = old >= 3 ? old - 3 : 0; /* the end may straddle two reads */
    char *end = memmem(c->resp + from, c->resp_len - from, "\r\n\r\n", 4);
    if (!end) {
        if (c->resp_len == RESP_MAX - 1)
            handshake_failed(i, F_PROTOCOL, 0, now); /* no end in sight */
        return -1;
    }
    size_t header = (size_t)(end + 4 - c->resp);
    if (!check_answer(i, now))
        return -1;
    record_open(i, now);
    return (ssize_t)(header - old);
}

/* ---- open connections: frames ---------------------------------------------- */

static void lost(uint32_t i, const char *why)
{
    struct conn *c = &conns[i];
    if (!after.first_error[0])
        snprintf(after.first_error, sizeof after.first_error, "connection %u: %s", i, why);
    if (c->messages >= level)
        at_level--;
    if (c->reconnected && c->messages == 0)
        back_lost++; /* came back, but will never receive: the storm must not wait */
    open_count--;
    if (close(c->fd) < 0)
        die("close");
    c->fd = -1;
    c->state = S_DEAD;
}

static void protocol_error(uint32_t i, const char *why)
{
    after.protocol_errors++;
    lost(i, why);
}

static void on_message(uint32_t i, int64_t now)
{
    struct conn *c = &conns[i];
    c->messages++;
    after.messages++;
    if (c->messages == level)
        at_level++;
    if (c->reconnected && c->messages == 1) {
        receiving++;
        t_last_receiving = now;
    }
}

static void send_pong(uint32_t i)
{
    struct conn *c = &conns[i];
    static const uint8_t mask[4] = {0x5a, 0xa5, 0x3c, 0xc3}; /* clients must mask */
    uint8_t f[6 + 125];
    f[0] = 0x8A; /* FIN, pong */
    f[1] = 0x80 | c->ctrl_len;
    memcpy(f + 2, mask, 4);
    for (int k = 0; k < c->ctrl_len; k++)
        f[6 + k] = c->ctrl[k] ^ mask[k % 4];
    ssize_t w = send(c->fd, f, 6u + c->ctrl_len, MSG_NOSIGNAL);
    if (w == 6 + c->ctrl_len)
        return;
    after.pongs_failed++;
    if (w >= 0) /* half a frame on the wire: the stream is broken */
        protocol_error(i, "short write of a pong");
    /* else (EAGAIN, a full socket): the server will see no pong and may close us,
     * which the report shows. */
}

/* A whole frame has been read (its control payload, if any, is in ctrl). */
static int frame_done(uint32_t i, int64_t now)
{
    struct conn *c = &conns[i];
    after.frames++;
    switch (c->opcode) {
    case 0x1:
    case 0x2:
        if (c->in_message) {
            protocol_error(i, "data frame inside a fragmented message");
            return -1;
        }
        if (c->fin)
            on_message(i, now);
        else
            c->in_message = 1;
        return 0;
    case 0x0:
        if (!c->in_message) {
            protocol_error(i, "continuation without a message");
            return -1;
        }
        if (c->fin) {
            c->in_message = 0;
            on_message(i, now);
        }
        return 0;
    case 0x9:
        after.pings++;
        send_pong(i);
        return c->state == S_OPEN ? 0 : -1;
    case 0xA:
        return 0; /* an unsolicited pong: nothing to do */
    case 0x8:
        after.server_closes++;
        after.last_close_code = c->ctrl_len >= 2 ? c->ctrl[0] << 8 | c->ctrl[1] : 1005;
        lost(i, "close frame from the server");
        return -1;
    default:
        protocol_error(i, "unknown opcode");
        return -1;
    }
}

/* The frame header in hdr is complete: check it and set up its payload. */
static int header_done(uint32_t i)
{
    struct conn *c = &conns[i];
    uint8_t b0 = c->hdr[0], b1 = c->hdr[1];
    c->fin = b0 >> 7;
    c->opcode = b0 & 0x0F;
    if (b0 & 0x70) {
        protocol_error(i, "RSV bits set (no extension was negotiated)");
        return -1;
    }
    if (b1 & 0x80) {
        protocol_error(i, "masked frame from the server");
        return -1;
    }
    uint64_t len = b1 & 0x7F;
    if (len == 126)
        len = (uint64_t)c->hdr[2] << 8 | c->hdr[3];
    else if (len == 127) {
        len = 0;
        for (int k = 0; k < 8; k++)
            len = len << 8 | c->hdr[2 + k];
    }
    if ((c->opcode & 0x8) && (len > 125 || !c->fin)) {
        protocol_error(i, "control frame too long or fragmented");
        return -1;
    }
    c->payload_left = len;
    c->ctrl_len = 0;
    c->hdr_len = 0;
    return 0;
}

static size_t header_size(const uint8_t *hdr, size_t have)
{
    if (have < 2)
        return 2;
    size_t len7 = hdr[1] & 0x7F;
    return 2u + (len7 == 126 ? 2u : len7 == 127 ? 8u : 0u) + (hdr[1] & 0x80 ? 4u : 0u);
}

static int feed_frames(uint32_t i, const uint8_t *p, size_t n, int64_t now)
{
    struct conn *c = &conns[i];
    while (n > 0) {
        if (c->in_payload) {
            size_t take = n < c->payload_left ? n : (size_t)c->payload_left;
            if (c->opcode & 0x8) { /* a control frame: keep it (a ping's is echoed) */
                memcpy(c->ctrl + c->ctrl_len, p, take);
                c->ctrl_len += (uint8_t)take;
            }
            p += take;
            n -= take;
            c->payload_left -= take;
            if (c->payload_left)
                continue;
            c->in_payload = 0;
            if (frame_done(i, now) < 0)
                return -1;
            continue;
        }
        c->hdr[c->hdr_len++] = *p++;
        n--;
        if (c->hdr_len < header_size(c->hdr, c->hdr_len))
            continue;
        if (header_done(i) < 0)
            return -1;
        if (c->payload_left)
            c->in_payload = 1;
        else if (frame_done(i, now) < 0)
            return -1;
    }
    return 0;
}

/* ---- the event loop -------------------------------------------------------- */

static void on_event(uint32_t i, uint32_t events, int64_t now)
{
    struct conn *c = &conns[i];
    if (c->state == S_CONNECTING) {
        if (events & EPOLLERR) {
            int err = 0;
            socklen_t len = sizeof err;
            if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                err = errno;
            handshake_failed(i, classify(err ? err : ECONNRESET), err, now);
            return;
        }
        if (send_request(i, now) < 0 || c->state == S_CONNECTING)
            return;
    }
    if (c->state != S_UPGRADING && c->state != S_OPEN)
        return; /* an event for a socket we closed in this batch */
    if (!(events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
        return; /* only writable (edge-triggered OUT is reported with everything) */
    /* A FIN or an error can come in the same wake-up as data: then read to the end. */
    int drain = (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
    for (;;) {
        ssize_t n = recv(c->fd, rbuf, sizeof rbuf, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            int err = n == 0 ? 0 : errno;
            if (c->state == S_UPGRADING) {
                handshake_failed(i, err ? classify(err) : F_EOF, err, now);
            } else if (err == ECONNRESET) {
                after.reset++;
                lost(i, "reset by the server");
            } else if (err) {
                after.other++;
                after.last_errno = err;
                lost(i, strerror(err));
            } else {
                after.eof++;
                lost(i, "closed by the server without a close frame");
            }
            return;
        }
        const uint8_t *p = rbuf;
        size_t left = (size_t)n;
        if (c->state == S_UPGRADING) {
            ssize_t used = feed_answer(i, p, left, now);
            if (used < 0 && c->state != S_UPGRADING)
                return; /* failed, and closed */
            if (used < 0)
                continue; /* the answer is not complete: read on (EAGAIN or the rest) */
            p += used;
            left -= (size_t)used;
        }
        if (left && feed_frames(i, p, left, now) < 0)
            return;
        /* Edge-triggered: new data will wake us again, so a short read means the
         * socket is empty and saves the recv() that would say EAGAIN. */
        if ((size_t)n < sizeof rbuf && !drain)
            return;
    }
}

static void expire_handshakes(int64_t now)
{
    int64_t limit = (int64_t)(cfg.handshake_timeout * 1e9);
    while (fl_head >= 0 && now - conns[fl_head].t_start > limit)
        handshake_failed((uint32_t)fl_head, F_TIMEOUT, 0, now);
}

static void open_more(int64_t now)
{
    while (retrying.len && conns[retrying.items[retrying.head]].t_start <= now)
        push(&pending, pop(&retrying));
    while (inflight < cfg.concurrency && pending.len)
        start_connect(pop(&pending), now);
}

static int opening_done(void)
{
    return !pending.len && !retrying.len && !inflight;
}

/* ---- reports ------------------------------------------------------------------ */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double pct_ms(const int64_t *v, uint32_t n, unsigned p)
{
    if (!n)
        return 0;
    uint64_t k = ((uint64_t)p * n + 99) / 100; /* nearest rank: ceil(p% of n) */
    return v[k ? k - 1 : 0] / 1e6;
}

static double cpu_s(const struct rusage *r)
{
    return (double)r->ru_utime.tv_sec + r->ru_utime.tv_usec / 1e6 +
           (double)r->ru_stime.tv_sec + r->ru_stime.tv_usec / 1e6;
}

static void print_phase(const char *name, struct phase *p)
{
    qsort(p->lat, p->n_lat, sizeof *p->lat, cmp_i64);
    double cpu = cpu_s(&p->ru1) - cpu_s(&p->ru0);
    double user = (double)(p->ru1.ru_utime.tv_sec - p->ru0.ru_utime.tv_sec) +
                  (double)(p->ru1.ru_utime.tv_usec - p->ru0.ru_utime.tv_usec) / 1e6;
    printf("\"%s\":{\"opened\":%u,\"failed\":%u,\"refused\":%u,\"reset\":%u,\"eof\":%u,"
           "\"timeout\":%u,\"http_status\":%u,\"last_status\":%d,\"bad_accept\":%u,"
           "\"protocol\":%u,\"local\":%u,\"last_errno\":\"%s\",\"retries\":%u,"
           "\"t_first_ns\":%" PRId64 ",\"t_last_ns\":%" PRId64 ",\"seconds\":%.6f,"
           "\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,\"client_cpu_s\":%.4f,"
           "\"client_user_cpu_s\":%.4f,\"client_cpu_us_per_handshake\":%.2f}",
           name, p->opened, p->failed, p->refused, p->reset, p->eof, p->timeout, p->status,
           p->last_status, p->bad_accept, p->protocol, p->local,
           p->last_errno ? strerrorname_np(p->last_errno) : "", p->retries, p->t_first,
           p->t_last, p->t_last > p->t_first ? (p->t_last - p->t_first) / 1e9 : 0.0,
           pct_ms(p->lat, p->n_lat, 50), pct_ms(p->lat, p->n_lat, 99),
           pct_ms(p->lat, p->n_lat, 100), cpu, user, p->opened ? cpu * 1e6 / p->opened : 0.0);
}

static void print_head(const char *event, int64_t now)
{
    printf("{\"event\":\"%s\",\"label\":\"%s\",\"pid\":%d,\"mode\":\"%s\",\"n\":%u,"
           "\"t_ns\":%" PRId64 ",",
           event, cfg.label, getpid(), mode_names[cfg.mode], cfg.n, now);
}

static void print_connected(int64_t now)
{
    getrusage(RUSAGE_SELF, &first.ru1);
    print_head("connected", now);
    print_phase("connect", &first);
    printf("}\n");
    fflush(stdout);
}

static void print_report(int64_t now, const char *end)
{
    uint32_t lo = UINT32_MAX, hi = 0;
    for (uint32_t i = 0; i < cfg.n; i++) {
        if (conns[i].state != S_OPEN)
            continue;
        if (conns[i].messages < lo)
            lo = conns[i].messages;
        if (conns[i].messages > hi)
            hi = conns[i].messages;
    }
    if (!open_count)
        lo = 0;
    print_head("report", now);
    printf("\"end\":\"%s\",", end);
    print_phase("connect", &first);
    printf(",\"messages\":{\"open\":%u,\"min\":%u,\"max\":%u,\"total\":%" PRIu64
           ",\"frames\":%" PRIu64 ",\"pings\":%" PRIu64 ",\"pongs_failed\":%" PRIu64
           ",\"protocol_errors\":%u,\"server_closes\":%u,\"last_close_code\":%d,"
           "\"eof\":%u,\"reset\":%u,\"other_errors\":%u,\"first_error\":\"%s\"}",
           open_count, lo, hi, after.messages, after.frames, after.pings, after.pongs_failed,
           after.protocol_errors, after.server_closes, after.last_close_code, after.eof,
           after.reset, after.other, after.first_error);
    if (cfg.mode == M_STORM) {
        printf(",\"storm\":{\"dropped\":%u,\"back\":%u,\"receiving\":%u,\"back_lost\":%u,"
               "\"t_dropped_ns\":%" PRId64 ",\"t_last_receiving_ns\":%" PRId64 ","
               "\"back_s\":%.6f,\"receiving_s\":%.6f,",
               dropped, back, receiving, back_lost, t_dropped, t_last_receiving,
               back && storm_phase.t_last ? (storm_phase.t_last - t_dropped) / 1e9 : 0.0,
               receiving ? (t_last_receiving - t_dropped) / 1e9 : 0.0);
        print_phase("reconnect", &storm_phase);
        printf("}");
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf(",\"client_cpu_s\":%.4f,\"wall_s\":%.3f}\n", cpu_s(&ru), (now - t_start_ns) / 1e9);
    fflush(stdout);
}

/* For a closer look at the distribution: "phase milliseconds" lines, sorted. */
static void write_latencies(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        die(path);
    for (uint32_t k = 0; k < first.n_lat; k++)
        fprintf(f, "connect %.3f\n", first.lat[k] / 1e6);
    for (uint32_t k = 0; k < storm_phase.n_lat; k++)
        fprintf(f, "reconnect %.3f\n", storm_phase.lat[k] / 1e6);
    if (fclose(f) != 0)
        die(path);
}

/* Storm: close the chosen connections at once and queue them to open again. */
static void drop(int64_t now)
{
    double acc = 0;
    t_dropped = now;
    for (uint32_t i = 0; i < cfg.n; i++) {
        struct conn *c = &conns[i];
        if (c->state != S_OPEN)
            continue;
        acc += cfg.fraction; /* spread a fraction evenly over the connections */
        if (acc < 1.0 - 1e-9)
            continue;
        acc -= 1.0;
        if (close(c->fd) < 0)
            die("close");
        c->fd = -1;
        c->state = S_IDLE;
        c->reconnected = 1;
        if (c->messages >= level)
            at_level--;
        open_count--;
        dropped++;
        push(&pending, i);
    }
    ph = &storm_phase;
    getrusage(RUSAGE_SELF, &storm_phase.ru0); /* the reconnects' CPU, not the closes' */
    print_head("dropped", now_ns());
    printf("\"dropped\":%u,\"t_dropped_ns\":%" PRId64 "}\n", dropped, t_dropped);
    fflush(stdout);
}

static void on_signal(int sig)
{
    stop_signal = sig;
}

/* ---- setup ---------------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr,
            "usage: storm connect|hold|storm --port P [options]\n"
            "  --host ADDR            server address (127.0.0.1)\n"
            "  --channel NAME         the path, /NAME (storm)\n"
            "  -n N                   connections (1000)\n"
            "  -c C                   handshakes in flight at most (512)\n"
            "  --src A[-B]            source addresses, used in turn (default: the kernel's)\n"
            "  --handshake-timeout S  per handshake (10)\n"
            "  --duration S           the process ends by then, whatever the mode (300)\n"
            "  --linger S             connect: hold the connections S seconds (0)\n"
            "  --messages M           storm: drop once every connection has M messages (1)\n"
            "  --fraction F           storm: share of the connections to drop (1.0)\n"
            "  --retry-ms MS          retry a failed handshake after MS ms (0: never)\n"
            "  --label TEXT           copied into every line of output\n"
            "  --latencies FILE       write every handshake latency (ms) there at the end\n");
    exit(2);
}

static double number(const char *s, double lo, double hi)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "storm: bad number '%s' (%g..%g)\n", s, lo, hi);
        exit(2);
    }
    return v;
}

static void parse_sources(const char *spec)
{
    char a[32], b[32];
    const char *dash = strchr(spec, '-');
    size_t la = dash ? (size_t)(dash - spec) : strlen(spec);
    if (la >= sizeof a || (dash && strlen(dash + 1) >= sizeof b))
        usage();
    memcpy(a, spec, la);
    a[la] = '\0';
    snprintf(b, sizeof b, "%s", dash ? dash + 1 : a);
    struct in_addr lo, hi;
    if (inet_pton(AF_INET, a, &lo) != 1 || inet_pton(AF_INET, b, &hi) != 1 ||
        ntohl(hi.s_addr) < ntohl(lo.s_addr)) {
        fprintf(stderr, "storm: bad source range '%s'\n", spec);
        exit(2);
    }
    n_srcs = ntohl(hi.s_addr) - ntohl(lo.s_addr) + 1;
    srcs = calloc(n_srcs, sizeof *srcs);
    if (!srcs)
        die("calloc");
    for (uint32_t k = 0; k < n_srcs; k++) {
        srcs[k].sin_family = AF_INET;
        srcs[k].sin_addr.s_addr = htonl(ntohl(lo.s_addr) + k);
    }
}

static void parse_args(int argc, char **argv)
{
    static const struct option opts[] = {
        {"port", required_argument, 0, 'p'},
        {"host", required_argument, 0, 'H'},
        {"channel", required_argument, 0, 'C'},
        {"src", required_argument, 0, 's'},
        {"handshake-timeout", required_argument, 0, 't'},
        {"duration", required_argument, 0, 'd'},
        {"linger", required_argument, 0, 'l'},
        {"messages", required_argument, 0, 'm'},
        {"fraction", required_argument, 0, 'f'},
        {"retry-ms", required_argument, 0, 'r'},
        {"label", required_argument, 0, 'L'},
        {"latencies", required_argument, 0, 'T'},
        {0, 0, 0, 0},
    };
    if (argc < 2)
        usage();
    if (!strcmp(argv[1], "connect"))
        cfg.mode = M_CONNECT;
    else if (!strcmp(argv[1], "hold"))
        cfg.mode = M_HOLD;
    else if (!strcmp(argv[1], "storm"))
        cfg.mode = M_STORM;
    else
        usage();
    optind = 2;
    int o;
    while ((o = getopt_long(argc, argv, "n:c:p:", opts, NULL)) != -1) {
        switch (o) {
        case 'n': cfg.n = (uint32_t)number(optarg, 1, 1 << 24); break;
        case 'c': cfg.concurrency = (uint32_t)number(optarg, 1, 1 << 24); break;
        case 'p': cfg.port = (int)number(optarg, 1, 65535); break;
        case 'H': cfg.host = optarg; break;
        case 'C': cfg.channel = optarg; break;
        case 's': parse_sources(optarg); break;
        case 't': cfg.handshake_timeout = number(optarg, 0.001, 3600); break;
        case 'd': cfg.duration = number(optarg, 0.001, 86400); break;
        case 'l': cfg.linger = number(optarg, 0, 86400); break;
        case 'm': cfg.storm_after = (uint32_t)number(optarg, 1, 1e9); break;
        case 'f': cfg.fraction = number(optarg, 0.000001, 1); break;
        case 'r': cfg.retry_ns = (int64_t)(number(optarg, 0, 3.6e6) * 1e6); break;
        case 'L': cfg.label = optarg; break;
        case 'T': cfg.latencies = optarg; break;
        default: usage();
        }
    }
    if (optind != argc || !cfg.port)
        usage();
}

static void setup(void)
{
    /* Every connection is a file: take the hard limit. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        die("getrlimit");
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
        die("setrlimit");
    if (rl.rlim_cur < (rlim_t)cfg.n + 16)
        fprintf(stderr, "storm: warning: %u connections but an open-files limit of %lu\n",
                cfg.n, (unsigned long)rl.rlim_cur);
    /* The runner may die: do not outlive it holding thousands of sockets. */
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0)
        die("prctl");
    struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: wake epoll_wait */
    if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0)
        die("sigaction");
    signal(SIGPIPE, SIG_IGN);

    server.sin_family = AF_INET;
    server.sin_port = htons((uint16_t)cfg.port);
    if (inet_pton(AF_INET, cfg.host, &server.sin_addr) != 1) {
        fprintf(stderr, "storm: --host must be an IPv4 address\n");
        exit(2);
    }

    /* One key for every connection (the server cannot tell), random per process. */
    uint8_t nonce[16];
    char key[25];
    if (getrandom(nonce, sizeof nonce, 0) != sizeof nonce)
        die("getrandom");
    base64(nonce, sizeof nonce, key);
    accept_for("dGhlIHNhbXBsZSBub25jZQ==", expected_accept); /* RFC 6455's example */
    if (strcmp(expected_accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") != 0) {
        fprintf(stderr, "storm: SHA-1 self-test failed\n");
        exit(1);
    }
    accept_for(key, expected_accept);
    int len = snprintf(request, sizeof request,
                       "GET /%s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                       "Sec-WebSocket-Version: 13\r\n\r\n",
                       cfg.channel, cfg.host, cfg.port, key);
    if (len < 0 || (size_t)len >= sizeof request) {
        fprintf(stderr, "storm: channel name too long\n");
        exit(2);
    }
    request_len = (size_t)len;

    conns = calloc(cfg.n, sizeof *conns);
    pending.items = calloc(cfg.n, sizeof *pending.items);
    retrying.items = calloc(cfg.n, sizeof *retrying.items);
    first.lat = calloc(cfg.n, sizeof *first.lat);
    /* Only a 101 records a latency, and a connection gets at most one 101 per
     * phase (retries follow failures only), so n entries per phase are enough. */
    storm_phase.lat = calloc(cfg.n, sizeof *storm_phase.lat);
    if (!conns || !pending.items || !retrying.items || !first.lat || !storm_phase.lat)
        die("calloc");
    pending.cap = retrying.cap = cfg.n;
    for (uint32_t i = 0; i < cfg.n; i++) {
        conns[i].fd = -1;
        push(&pending, i);
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    setup();
    enum { OPENING, HOLDING, WAITING, RECONNECTING } phase = OPENING;
    struct epoll_event events[MAX_EVENTS];
    t_start_ns = now_ns();
    int64_t deadline = t_start_ns + (int64_t)(cfg.duration * 1e9), linger_end = 0;
    int said_back = 0;
    const char *end = "duration";
    getrusage(RUSAGE_SELF, &first.ru0);

    for (;;) {
        int64_t now = now_ns();
        if (stop_signal) {
            end = "signal";
            break;
        }
        if (now >= deadline)
            break;
        expire_handshakes(now);
        open_more(now);
        if (phase == OPENING && opening_done()) {
            print_connected(now);
            phase = cfg.mode == M_STORM ? WAITING : HOLDING;
            linger_end = now + (int64_t)(cfg.linger * 1e9);
        }
        if (phase == HOLDING && cfg.mode == M_CONNECT && now >= linger_end) {
            end = "linger";
            break;
        }
        /* Every open connection has `level` messages: say so, and look for the next. */
        while ((phase == HOLDING || phase == WAITING) && open_count && at_level == open_count) {
            print_head("received", now);
            printf("\"messages\":%u,\"connections\":%u}\n", level, open_count);
            fflush(stdout);
            if (phase == WAITING && level == cfg.storm_after) {
                drop(now);
                phase = RECONNECTING;
                break;
            }
            level++;
            at_level = 0;
            for (uint32_t i = 0; i < cfg.n; i++)
                if (conns[i].state == S_OPEN && conns[i].messages >= level)
                    at_level++;
        }
        if (phase == RECONNECTING) {
            open_more(now);
            if (opening_done() && !said_back) { /* the runner publishes on this */
                said_back = 1;
                print_head("back", now);
                printf("\"back\":%u,\"failed\":%u,\"t_back_ns\":%" PRId64 "}\n", back,
                       storm_phase.failed, storm_phase.t_last);
                fflush(stdout);
            }
            if (opening_done() && receiving + back_lost == back) { /* all done */
                end = "storm done";
                break;
            }
        }
        int n = epoll_wait(ep, events, MAX_EVENTS, 20);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        now = now_ns();
        for (int k = 0; k < n; k++)
            on_event(events[k].data.u32, events[k].events, now);
    }
    int64_t now = now_ns();
    if (phase == OPENING)
        getrusage(RUSAGE_SELF, &first.ru1);
    if (phase == RECONNECTING)
        getrusage(RUSAGE_SELF, &storm_phase.ru1);
    print_report(now, end);
    if (cfg.latencies)
        write_latencies(cfg.latencies);
    for (uint32_t i = 0; i < cfg.n; i++)
        if (conns[i].fd >= 0 && close(conns[i].fd) < 0)
            die("close");
    return 0;
}
