/* wsscan: the load client's per-delivery work, in C.
 *
 * Read by two parsers: the C compiler (through wsscan.c) and cffi's cdef
 * parser (by ../_build.py). Plain declarations only: no #include, no #define.
 *
 * A scanner holds, per connection id (the ids ringio hands out), the state of
 * a WebSocket frame parser that keeps partial frames across calls, and per
 * (connection, publisher) the next expected sequence number with a 64-message
 * window of what arrived below it. Per publisher it holds a ring of messages
 * in flight: how many subscribers should get each one, how many did, and the
 * largest latency among them ("to the last subscriber").
 *
 * Two message formats (`fmt`), both `size` bytes in all, both a function of
 * (seq, ts, pub, size) only, so that the scanner checks every byte as it comes:
 *
 * WS_FMT_BINARY (binary frames; little-endian):
 *   [0, 8)   sequence number, 0, 1, 2... per publisher
 *   [8, 16)  send timestamp, CLOCK_MONOTONIC ns (the scheduled time in open loop)
 *   [16, 20) publisher id
 *   [20, size) pattern: byte i is byte (i % 8) of the 64-bit word
 *            seed(seq, ts, pub) + (i / 8) * 0x9E3779B97F4A7C15
 *   Pseudo-random: it does not compress at all.
 *
 * WS_FMT_JSON (text frames): one JSON object, ASCII, that deflates like a ticker feed
 * (repeated field names, a few symbols, prices near a base; about 29 % of its size at
 * 1,024 bytes with each message compressed on its own, 15 % with the window kept):
 *   [0, 76)  {"seq":"<16 hex>","ts":"<16 hex>","pub":"<8 hex>","ticks":[
 *            the same three numbers, lowercase hex, fixed width, at offsets 8, 32, 57
 *   then n = (size - 76 - 12) / 75 ticks of exactly 75 bytes each, tick j being
 *            {"sym":"AAPL","bid":"0187.46","ask":"0187.48","bq":"003300","aq":"002500"},
 *            with its symbol (one of 8), cents, spread and quantities drawn from
 *            mix(seed(seq, ts, pub) + j * 0x9E3779B97F4A7C15)
 *   then     {"pad":"<r dashes>"}]}   r = (size - 76 - 12) % 75, so that the object
 *            is exactly `size` bytes
 *   Smallest: WS_JSON_MIN bytes (the header, one tick, the padding object).
 *
 * permessage-deflate (RFC 7692), per connection (ws_conn_deflate): RSV1 on the first
 * frame of a data message marks it compressed; the scanner inflates it with zlib
 * (raw deflate, the 0x00 0x00 0xff 0xff tail put back, section 7.2.2) as its bytes
 * come, never past `size` + 1 bytes, and checks what comes out as it checks an
 * uncompressed message. Memory: with server_no_context_takeover a connection holds
 * an inflate stream only while a compressed message is arriving (split across reads);
 * a few free streams are kept for reuse by the scanner. Without it, the LZ77 window
 * outlives each message: a connection holds a stream from its first compressed
 * message until ws_conn_set / ws_conn_gone, about 7 KiB of zlib state plus the
 * server's window (2^server_max_window_bits bytes: 32 KiB by default, 39 KiB in all;
 * 8 KiB at 10 bits).
 * ws_counts.inflate_bytes says what zlib holds at any time.
 */

typedef struct ws_scan ws_scan;

enum {
    WS_ROLE_NONE = 0,        /* not parsed (closed, or still in the HTTP handshake) */
    WS_ROLE_SUB = 1,         /* a subscriber: data frames are checked and counted   */
    WS_ROLE_PUB = 2,         /* a publisher: data frames are skipped (own echoes)   */
};

enum {
    WS_NOTE_PING = 1,        /* a ping arrived: a pong with `payload` is owed       */
    WS_NOTE_CLOSE = 2,       /* a close frame arrived; aux = its code (1005: none)  */
    WS_NOTE_PROTOCOL = 3,    /* the stream broke the protocol; aux = WS_ERR_*, the
                                connection is no longer parsed                      */
};

enum {
    WS_ERR_RSV = 1,          /* reserved bits set: any without permessage-deflate;
                                RSV2/RSV3; RSV1 on a control or continuation frame  */
    WS_ERR_MASKED = 2,       /* a server frame was masked                           */
    WS_ERR_OPCODE = 3,       /* reserved opcode                                     */
    WS_ERR_CONTROL = 4,      /* fragmented or > 125-byte control frame              */
    WS_ERR_CONTINUATION = 5, /* continuation with no message started                */
    WS_ERR_INTERLEAVED = 6,  /* new data message before the last one finished       */
    WS_ERR_LENGTH = 7,       /* 64-bit length with the top bit set                  */
    WS_ERR_AFTER_CLOSE = 8,  /* bytes after a close frame                           */
};

enum {
    WS_FMT_BINARY = 0,       /* message formats: see the layouts above              */
    WS_FMT_JSON = 1,
    WS_JSON_MIN = 163,       /* smallest WS_FMT_JSON message                        */
};

typedef struct ws_counts {
    uint64_t delivered;      /* intact messages, first arrival, to subscribers     */
    uint64_t lost;           /* sequence gaps: a later message arrived, this one
                                not (late arrivals within the window are moved to
                                out_of_order)                                       */
    uint64_t undelivered;    /* ws_finish: messages a live subscriber never got,
                                after the last one it did get (the run ended first) */
    uint64_t duplicated;     /* a sequence number already received                  */
    uint64_t out_of_order;   /* arrived after a later one of the same publisher     */
    uint64_t corrupted;      /* wrong length, bad header or a pattern mismatch;
                                a compressed message that does not inflate          */
    uint64_t bad_opcode;     /* data message with the wrong opcode (text/binary)    */
    uint64_t protocol_errors;/* WS_NOTE_PROTOCOL notes                              */
    uint64_t frames;         /* every frame parsed                                  */
    uint64_t bytes;          /* bytes fed                                           */
    uint64_t fragmented;     /* messages that came in more than one frame           */
    uint64_t ignored;        /* data messages on publisher connections              */
    uint64_t pings;
    uint64_t pongs;          /* unsolicited pongs received                          */
    uint64_t closes;
    uint64_t completed;      /* messages every expected subscriber has resolved
                                (received, or skipped past)                         */
    uint64_t completed_all;  /* of those, received by every expected subscriber     */
    uint64_t expired;        /* messages given up on by ws_expire or a ring wrap    */
    uint64_t receiving;      /* subscribers that got an intact message since their
                                ws_conn_set (each join counted once)                */
    uint64_t before_join;    /* intact messages published before the subscriber's
                                ws_conn_set that reached it (it joined while they
                                were on their way: not a fault, not counted above)  */
    uint64_t wire_bytes;     /* frame bytes (headers and payload as received, so
                                compressed) of the messages counted in delivered    */
    uint64_t compressed;     /* data messages with RSV1 (compressed) to subscribers */
    uint64_t inflate_errors; /* compressed messages zlib refused (a corrupt stream,
                                bytes after its final block, no memory); corrupted  */
    uint64_t inflate_oversize; /* compressed messages that inflated past `size`
                                (inflating stopped there: a bomb); corrupted        */
    uint64_t inflate_streams;/* now, not a count: zlib inflate streams allocated    */
    uint64_t inflate_bytes;  /* now, not a count: bytes zlib holds for them         */
} ws_counts;

typedef struct ws_note {
    uint32_t conn;
    uint32_t kind;
    uint32_t aux;
    uint32_t len;
    uint8_t payload[128];
} ws_note;

/* max_conns: ids are < max_conns. npub: publishers 0..npub-1. size: message
 * bytes (>= 20; >= WS_JSON_MIN for WS_FMT_JSON). opcode: expected data opcode
 * (1 text, 2 binary). ring_bits: log2 of messages tracked in flight per
 * publisher. fmt: WS_FMT_*. NULL on bad arguments or no memory. */
ws_scan *ws_new(uint32_t max_conns, uint32_t npub, uint32_t size, uint32_t opcode,
                uint32_t ring_bits, int fmt);
void ws_free(ws_scan *s);

/* Start parsing a connection afresh with a role (WS_ROLE_NONE stops it). A
 * subscriber's expected sequence numbers start at what each publisher has
 * published so far. */
int ws_conn_set(ws_scan *s, uint32_t conn, int role);
/* The connection negotiated permessage-deflate (call after ws_conn_set, which
 * clears it). no_takeover: the server answered server_no_context_takeover, each
 * message stands alone. Otherwise window_bits (8..15) is the server's window,
 * server_max_window_bits or 15 (8 is inflated with 9: zlib's deflate writes 8 as
 * 9). Returns 0, or -1 on a bad argument. */
int ws_conn_deflate(ws_scan *s, uint32_t conn, int no_takeover, uint32_t window_bits);
/* A subscriber went away: messages in flight stop waiting for it. */
void ws_conn_gone(ws_scan *s, uint32_t conn);

/* Parse received bytes. now_ns = 0: read CLOCK_MONOTONIC once per call.
 * Return the number of notes waiting (see ws_notes), or -1 if a connection id
 * is out of range. */
int ws_feed(ws_scan *s, uint32_t conn, const uint8_t *data, size_t len, uint64_t now_ns);
/* n chunks of one blob: chunk i is lens[i] bytes at blob + offs[i], for conns[i]. */
int ws_feed_batch(ws_scan *s, const uint32_t *conns, const uint64_t *offs,
                  const uint32_t *lens, size_t n, const uint8_t *blob, uint64_t now_ns);
/* Answer pings in C: from now on a ping is answered as it is parsed with a masked
 * pong carrying its payload, queued by `send` on `loop` (ringio's rio_send and a
 * loop's handle, by address: Loop.send_hook), and makes no WS_NOTE_PING (a pong that
 * send fails to queue, -errno, becomes a note as before; a connection the loop has
 * closed is not answered). send = 0: back to notes. A million idle
 * subscribers answer some 40,000 pings a second at ringcast's default interval: a
 * Python call per ping costs their process more than the ping costs the server. */
int ws_answer_pings(ws_scan *s, uintptr_t send, uintptr_t loop);
/* Notes since the last call to ws_take_notes; the array stays valid until
 * the next feed. */
ws_note *ws_take_notes(ws_scan *s, uint32_t *count);

/* A message is about to be sent: expect it at `expected` subscribers. seq
 * must be the publisher's next sequence number. Returns 0, or -1 if seq is
 * not the next one. */
int ws_publish(ws_scan *s, uint32_t pub, uint64_t seq, uint64_t ts_ns, uint32_t expected);
/* Give up on messages in flight sent before cutoff_ns. Returns how many. */
uint64_t ws_expire(ws_scan *s, uint64_t cutoff_ns);
/* End of run: count as undelivered what each live subscriber has not received
 * past the last message it did receive. */
void ws_finish(ws_scan *s);

/* A run spread over several client processes (one of them, the lead, publishes;
 * the followers mirror its ws_publish calls). A follower logs every message it
 * stops tracking, completed or given up on, as a ws_done record; the lead feeds
 * the followers' records to ws_merge, and a message of the lead is complete
 * once its own subscribers and `peers` records have resolved it. Call before
 * the first ws_publish. Returns 0, or -1 on a bad argument. */
typedef struct ws_done {
    uint64_t seq;
    uint64_t maxlat;         /* largest latency among the follower's deliveries     */
    uint32_t pub;
    uint32_t expected;       /* the follower's subscribers for this message         */
    uint32_t resolved;       /* of those, received or skipped past                  */
    uint32_t got;            /* of those, received intact                           */
} ws_done;

int ws_set_team(ws_scan *s, int log_done, uint32_t peers);
/* Publisher `pub` sends on another channel than this process's subscribers are on
 * (deaf != 0): its messages are expected by nobody here (publish them with expected
 * 0), a subscriber that gets one has got a corrupted message, and none is undelivered
 * at ws_finish. Returns 0, or -1 on a bad publisher. */
int ws_set_deaf(ws_scan *s, uint32_t pub, int deaf);
/* Records logged since the last call; valid until the next call into s. */
ws_done *ws_take_done(ws_scan *s, uint32_t *count);
/* Merge followers' records; -1 if one names a publisher out of range. */
int ws_merge(ws_scan *s, const ws_done *recs, size_t n);

const ws_counts *ws_get_counts(ws_scan *s);
uint64_t ws_published(ws_scan *s, uint32_t pub);

/* Latency histograms, ns, log-linear buckets: 0 per delivery, 1 to the last
 * subscriber (cumulative); 2 and 3 the same since the last ws_hist_reset_interval. */
uint32_t ws_hist_buckets(void);
const uint64_t *ws_hist(ws_scan *s, int which);
void ws_hist_reset_interval(ws_scan *s);
/* Smallest and largest value of bucket i. */
uint64_t ws_bucket_low(uint32_t i);
uint64_t ws_bucket_high(uint32_t i);
uint32_t ws_bucket_of(uint64_t v);

/* Write one message of format fmt. ws_frame: a single-frame WebSocket message of
 * `opcode`, masked with mask_key when masked != 0, into out (cap bytes); returns
 * its length or 0 if cap is too small (or size too small for fmt). ws_payload: the
 * bare payload (size bytes, which must be at least fmt's smallest). */
size_t ws_frame(uint8_t *out, size_t cap, uint32_t pub, uint64_t seq, uint64_t ts_ns,
                uint32_t size, int opcode, int masked, uint32_t mask_key, int fmt);
void ws_payload(uint8_t *out, uint32_t pub, uint64_t seq, uint64_t ts_ns, uint32_t size,
                int fmt);
/* Check a whole payload; 1 if it is an intact `size`-byte message of format fmt. */
int ws_check(const uint8_t *payload, size_t len, uint32_t size, int fmt);
