/* headscan: the fast path's reading of a request head, in one pass (fast_path.py).
 *
 * Read by two parsers: the C compiler (through headscan.c) and cffi's cdef
 * parser (by ../_build.py). Plain declarations only: no #include, no #define.
 *
 * hs_scan reads a request line and header lines in the grammar fast_path.py
 * calls plain, a strict subset of RFC 9112 that h11 accepts with the same
 * meaning:
 *
 *   request-line = ("GET" / "POST") SP "/" *VCHAR SP "HTTP/1.1" CRLF
 *   header-line  = token ":" OWS value OWS CRLF
 *   value        = VCHARs, with runs of SP / HTAB between them (no obs-fold,
 *                  no obs-text, no control character)
 *   head         = request-line *header-line CRLF
 *
 * within the limits given (the request line without its CRLF, the header
 * lines with theirs, the number of header lines; and at most 128 lines). On success it returns the
 * length of the head, through the CRLF of its empty line, and fills `out`
 * and `blob`: each header's name in lower case, a NUL, its value without the
 * whitespace around it, a NUL. A plain value holds no NUL (a control
 * character), so one bytes.split(b"\0") gives the names and values back.
 * It returns 0 when the head is not plain, not all here yet, over a limit,
 * or when `blob` is too small for it: the caller then leaves the request to
 * h11, which reads anything and says what is wrong.
 *
 * A plain request also has no header name twice, a Host, no Transfer-Encoding
 * nor Expect, and a Content-Length (if any) of 1 to 19 digits: hs_scan returns
 * 0 for a head that breaks one of these too, and reads Content-Length,
 * Content-Type and Connection for the caller, so that a common request needs no
 * dict of its headers.
 *
 * Besides, it reads what a WebSocket handshake needs (RFC 6455 section 4.2.1) and
 * sets HS_UPGRADE when every check below that wsproto makes holds:
 *
 *   GET, no body (no Content-Length, or one worth 0); Upgrade: websocket (any
 *   case); Connection listing the token upgrade (any case);
 *   Sec-WebSocket-Version: 13; Sec-WebSocket-Key: 22 base64 characters and "=="
 *   (16 bytes); a Host without "xn--" (whose IDNA reading is left to Python).
 *
 * What is left to the caller's policy is pointed at: the Origin, the
 * Sec-WebSocket-Extensions offers, and whether a Sec-WebSocket-Protocol or an
 * Authorization header or a query came (which may carry credentials).
 */

enum {
    HS_GET = 1,
    HS_POST = 2,
};

enum {
    HS_UPGRADE = 1,          /* a WebSocket handshake every check above passed     */
    HS_ORIGIN = 2,           /* an Origin header: origin_off, origin_len            */
    HS_PROTOCOL = 4,         /* a Sec-WebSocket-Protocol header                     */
    HS_AUTHORIZATION = 8,    /* an Authorization header                             */
    HS_QUERY = 16,           /* the target has a query ("?")                        */
    HS_CONNECTION = 32,      /* a Connection header: conn_off, conn_len             */
    HS_EXTENSIONS = 64,      /* a Sec-WebSocket-Extensions header: ext_off, ext_len */
    HS_TEXT = 128,           /* hs_whole: a publish whose Content-Type is text      */
};

typedef struct hs_head {
    uint32_t method;         /* HS_GET or HS_POST                                */
    uint32_t target_off;     /* the request target: bytes [off, off + len)       */
    uint32_t target_len;
    uint32_t path_len;       /* the target's bytes before any "?"               */
    uint32_t headers;        /* header lines                                     */
    uint32_t blob_len;       /* bytes written to blob                            */
    uint32_t flags;          /* HS_* above                                       */
    uint32_t key_off;        /* HS_UPGRADE: the 24-byte Sec-WebSocket-Key value  */
    uint32_t origin_off;     /* HS_ORIGIN: its value                             */
    uint32_t origin_len;
    uint32_t conn_off;       /* HS_CONNECTION: its value                         */
    uint32_t conn_len;
    uint32_t type_off;       /* Content-Type's value (type_len 0: none or empty) */
    uint32_t type_len;
    uint32_t ext_off;        /* HS_EXTENSIONS: its value                         */
    uint32_t ext_len;
    uint32_t channel_off;    /* hs_whole: the channel the path names             */
    uint32_t channel_len;
    uint64_t content_length; /* 0 without a Content-Length                       */
} hs_head;

int64_t hs_scan(const uint8_t *data, size_t len, uint32_t max_line, uint32_t max_section,
                uint32_t max_headers, hs_head *out, uint8_t *blob, size_t blob_cap);

/* hs_whole: the server's settings that a whole request is decided by (built once
 * per settings by fast_path.py). */
typedef struct hs_policy {
    uint32_t max_line, max_section, max_headers;  /* as hs_scan's                    */
    uint32_t max_channel;    /* server.max_channel_name                          */
    uint64_t max_body;       /* limits.max_http_body                             */
    const uint8_t *prefix;   /* server.path_prefix ("" for none)                 */
    uint32_t prefix_len;
} hs_policy;

/* hs_whole: `data` read by hs_scan as exactly one whole plain request, and kept
 * only if it is one of the two a connection storm and a publishing backend send
 * over and over:
 *
 *   a WebSocket handshake (HS_UPGRADE) on "/<channel>", nothing after its head;
 *   "POST /publish/<channel>" whose body is the rest of `data` (at most max_body
 *   bytes), with no Connection header but one whose value is "keep-alive" (any
 *   case); HS_TEXT set when its Content-Type, up to any ";", is text/... or
 *   application/json (any case, whitespace around it ignored);
 *
 * the path taken without the policy's prefix (as fast_path.unprefixed does) and
 * the channel a valid name (channels.py: 1 to max_channel of A-Z a-z 0-9 _ - .
 * : @), at channel_off. Returns the head's length, or 0 for anything else: the
 * caller then reads `data` the usual way. Everything a token, an Origin or an
 * extension offer decides is left to the caller, through the flags. */
int64_t hs_whole(const uint8_t *data, size_t len, const hs_policy *policy, hs_head *out,
                 uint8_t *blob, size_t blob_cap);

/* hs_absorb_pongs: ringio's heartbeat absorber (rio_heartbeat_config) for a
 * WebSocket server. `data` is what a client sent, starting at a frame
 * boundary. Returns 1 when it is exactly one whole pong as a client sends it
 * (FIN, opcode 0xA, no RSV bit, masked, at most 125 bytes of payload): the
 * reply to the server's ping, which needs no more than to have arrived (the
 * loop takes it only while a ping is outstanding). Sets *aligned to whether
 * the data ends on a frame boundary. Nothing else is judged here: anything
 * else goes to the session, which checks every rule (RFC 6455 section 5) and
 * charges unsolicited pongs to the control-frame budget. */
int hs_absorb_pongs(const uint8_t *data, size_t len, int *aligned);
