/* headscan: a plain request head in one pass. The contract is in headscan_api.h;
 * the grammar is fast_path.py's, whose regular expressions are the reference
 * (tests/unit/protocol/test_headscan.py holds the two to the same answers). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "headscan_api.h"

/* RFC 9110 section 5.6.2: tchar. */
static int is_tchar(uint8_t c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static uint8_t TCHAR[256];      /* built once; 1 for a tchar */
static int tchar_ready;

static void build_tchar(void)
{
    for (int c = 0; c < 256; c++)
        TCHAR[c] = (uint8_t)is_tchar((uint8_t)c);
    tchar_ready = 1;
}

static inline int vchar(uint8_t c)
{
    return c >= 0x21 && c <= 0x7e;
}

static inline int ows(uint8_t c)
{
    return c == ' ' || c == '\t';
}

static inline int crlf_at(const uint8_t *p, size_t i, size_t n)
{
    return n - i >= 2 && p[i] == '\r' && p[i + 1] == '\n';
}

static int eq_nocase(const uint8_t *p, size_t n, const char *lower)
{
    size_t k = strlen(lower);
    if (n != k)
        return 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i] >= 'A' && p[i] <= 'Z' ? p[i] | 0x20 : p[i];
        if (c != (uint8_t)lower[i])
            return 0;
    }
    return 1;
}

/* Connection: a comma-separated list; is "upgrade" one of its tokens? */
static int lists_upgrade(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i <= n) {
        size_t start = i;
        while (i < n && p[i] != ',')
            i++;
        size_t a = start, b = i;
        while (a < b && ows(p[a]))
            a++;
        while (b > a && ows(p[b - 1]))
            b--;
        if (eq_nocase(p + a, b - a, "upgrade"))
            return 1;
        i++;
    }
    return 0;
}

static int is_b64(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
        || c == '+' || c == '/';
}

/* 16 bytes in base64: 21 characters, one of A Q g w (the last 4 bits are 0), "==". */
static int valid_key(const uint8_t *p, size_t n)
{
    if (n != 24 || p[22] != '=' || p[23] != '=' || !strchr("AQgw", p[21]) || !p[21])
        return 0;
    for (int i = 0; i < 21; i++)
        if (!is_b64(p[i]))
            return 0;
    return 1;
}

static int has_xn(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i + 4 <= n; i++)
        if (eq_nocase(p + i, 4, "xn--"))
            return 1;
    return 0;
}

/* 1 to 19 digits (as h11 takes them), into *out; 0 for anything else. */
static int read_length(const uint8_t *p, size_t n, uint64_t *out)
{
    if (n < 1 || n > 19)
        return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return 0;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    *out = v;
    return 1;
}

/* The headers a handshake reads: which one a (lower-case) name is. */
enum { H_OTHER, H_HOST, H_UPGRADE, H_CONNECTION, H_VERSION, H_KEY, H_ORIGIN, H_PROTOCOL,
       H_AUTHORIZATION, H_CONTENT_LENGTH, H_CONTENT_TYPE, H_TRANSFER_ENCODING, H_EXPECT,
       H_EXTENSIONS };

static int which(const uint8_t *name, size_t n)
{
    static const struct { const char *name; int id; } known[] = {
        {"host", H_HOST}, {"upgrade", H_UPGRADE}, {"connection", H_CONNECTION},
        {"sec-websocket-version", H_VERSION}, {"sec-websocket-key", H_KEY},
        {"origin", H_ORIGIN}, {"sec-websocket-protocol", H_PROTOCOL},
        {"authorization", H_AUTHORIZATION}, {"content-length", H_CONTENT_LENGTH},
        {"content-type", H_CONTENT_TYPE},
        {"transfer-encoding", H_TRANSFER_ENCODING}, {"expect", H_EXPECT},
        {"sec-websocket-extensions", H_EXTENSIONS},
    };
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (strlen(known[i].name) == n && memcmp(known[i].name, name, n) == 0)
            return known[i].id;
    return H_OTHER;
}

#define MAX_NAMES 128           /* names compared for duplicates; past it, not plain */

int64_t hs_scan(const uint8_t *p, size_t n, uint32_t max_line, uint32_t max_section,
                uint32_t max_headers, hs_head *out, uint8_t *blob, size_t cap)
{
    if (!tchar_ready)
        build_tchar();
    size_t i;
    if (n >= 4 && memcmp(p, "GET ", 4) == 0) {
        out->method = HS_GET;
        i = 4;
    } else if (n >= 5 && memcmp(p, "POST ", 5) == 0) {
        out->method = HS_POST;
        i = 5;
    } else {
        return 0;
    }
    if (i >= n || p[i] != '/')
        return 0;
    size_t target = i, query = 0;
    while (i < n && vchar(p[i])) {
        if (p[i] == '?' && !query)
            query = i;
        i++;
    }
    out->target_off = (uint32_t)target;
    out->target_len = (uint32_t)(i - target);
    out->path_len = (uint32_t)((query ? query : i) - target);
    uint32_t flags = query ? HS_QUERY : 0;
    if (n - i < 11 || memcmp(p + i, " HTTP/1.1\r\n", 11) != 0)
        return 0;
    i += 11;
    if (i - 2 > max_line)
        return 0;
    /* What the handshake checks find; `ws_bad` once one fails for good. */
    int ws_bad = out->method != HS_GET, host = 0, upgrade = 0, connection = 0, version = 0;
    int key = 0;
    uint32_t seen = 0;
    size_t names[MAX_NAMES][2];
    size_t section = i, b = 0;
    uint32_t headers = 0;
    out->content_length = 0;
    out->type_len = 0;
    while (!crlf_at(p, i, n)) {
        size_t name = i;
        while (i < n && TCHAR[p[i]])
            i++;
        if (i == name || i >= n || p[i] != ':')
            return 0;
        size_t name_end = i++;
        while (i < n && ows(p[i]))
            i++;
        size_t value = i, value_end = i;
        for (; i < n; i++) {
            if (vchar(p[i]))
                value_end = i + 1;
            else if (!ows(p[i]))
                break;
        }
        if (!crlf_at(p, i, n))
            return 0;       /* a control character, obs-text, a bare CR, or the end */
        i += 2;
        if (++headers > max_headers || i - section > max_section || headers > MAX_NAMES)
            return 0;
        size_t nlen = name_end - name, vlen = value_end - value;
        if (cap - b < nlen + vlen + 2)
            return 0;
        const uint8_t *lname = blob + b;
        for (size_t k = name; k < name_end; k++)
            blob[b++] = (uint8_t)(p[k] >= 'A' && p[k] <= 'Z' ? p[k] | 0x20 : p[k]);
        blob[b++] = 0;
        memcpy(blob + b, p + value, vlen);
        b += vlen;
        blob[b++] = 0;
        for (uint32_t h = 0; h + 1 < headers; h++)
            if (names[h][1] == nlen && memcmp(blob + names[h][0], lname, nlen) == 0)
                return 0;   /* a name twice */
        names[headers - 1][0] = (size_t)(lname - blob);
        names[headers - 1][1] = nlen;
        const uint8_t *v = p + value;
        switch (which(lname, nlen)) {
        case H_HOST:
            host = 1;
            ws_bad |= has_xn(v, vlen);
            break;
        case H_UPGRADE:
            upgrade = eq_nocase(v, vlen, "websocket");
            break;
        case H_CONNECTION:
            seen |= HS_CONNECTION;
            out->conn_off = (uint32_t)value;
            out->conn_len = (uint32_t)vlen;
            connection = lists_upgrade(v, vlen);
            break;
        case H_VERSION:
            version = vlen == 2 && v[0] == '1' && v[1] == '3';
            break;
        case H_KEY:
            key = valid_key(v, vlen);
            out->key_off = (uint32_t)value;
            break;
        case H_ORIGIN:
            seen |= HS_ORIGIN;
            out->origin_off = (uint32_t)value;
            out->origin_len = (uint32_t)vlen;
            break;
        case H_PROTOCOL:
            seen |= HS_PROTOCOL;
            break;
        case H_AUTHORIZATION:
            seen |= HS_AUTHORIZATION;
            break;
        case H_EXTENSIONS:
            seen |= HS_EXTENSIONS;
            out->ext_off = (uint32_t)value;
            out->ext_len = (uint32_t)vlen;
            break;
        case H_CONTENT_LENGTH:
            if (!read_length(v, vlen, &out->content_length))
                return 0;
            ws_bad |= out->content_length != 0;
            break;
        case H_CONTENT_TYPE:
            out->type_off = (uint32_t)value;
            out->type_len = (uint32_t)vlen;
            break;
        case H_TRANSFER_ENCODING:
        case H_EXPECT:
            return 0;       /* left to h11 */
        default:
            break;
        }
    }
    if (!host)
        return 0;
    if (!ws_bad && upgrade && connection && version && key)
        flags |= HS_UPGRADE;
    out->flags = flags | seen;
    out->headers = headers;
    out->blob_len = (uint32_t)b;
    return (int64_t)(i + 2);
}

/* ---- whole requests (hs_whole) --------------------------------------------- */

static int channel_char(uint8_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
        || c == '_' || c == '-' || c == '.' || c == ':' || c == '@';
}

static int valid_channel(const uint8_t *p, size_t n, uint32_t max)
{
    if (n < 1 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!channel_char(p[i]))
            return 0;
    return 1;
}

static int starts_nocase(const uint8_t *p, size_t n, const char *lower)
{
    size_t k = strlen(lower);
    return n >= k && eq_nocase(p, k, lower);
}

/* fast_path.is_text: the media type (before any ";", trimmed) is text/... or
 * application/json. A plain value holds only VCHARs and SP / HTAB. */
static int is_text(const uint8_t *p, size_t n)
{
    const uint8_t *semi = memchr(p, ';', n);
    if (semi)
        n = (size_t)(semi - p);
    while (n && ows(p[n - 1]))
        n--;
    while (n && ows(*p)) {
        p++;
        n--;
    }
    return starts_nocase(p, n, "text/") || eq_nocase(p, n, "application/json");
}

int64_t hs_whole(const uint8_t *p, size_t n, const hs_policy *pol, hs_head *out,
                 uint8_t *blob, size_t cap)
{
    int64_t end = hs_scan(p, n, pol->max_line, pol->max_section, pol->max_headers, out,
                          blob, cap);
    if (end <= 0)
        return 0;
    size_t path = out->target_off, plen = out->path_len, k = pol->prefix_len;
    if (k && plen > k && memcmp(p + path, pol->prefix, k) == 0 && p[path + k] == '/') {
        path += k;
        plen -= k;
    }
    static const char publish[] = "/publish/";
    const size_t skip = sizeof(publish) - 1;
    if (out->method == HS_GET) {
        if (!(out->flags & HS_UPGRADE) || (size_t)end != n)
            return 0;
        path += 1;      /* the "/" */
        plen -= 1;
    } else {
        uint64_t body = n - (size_t)end;
        if (body != out->content_length || body > pol->max_body || plen < skip ||
            memcmp(p + path, publish, skip) != 0)
            return 0;
        if ((out->flags & HS_CONNECTION) &&
            !eq_nocase(p + out->conn_off, out->conn_len, "keep-alive"))
            return 0;
        if (is_text(p + out->type_off, out->type_len))
            out->flags |= HS_TEXT;
        path += skip;
        plen -= skip;
    }
    if (!valid_channel(p + path, plen, pol->max_channel))
        return 0;
    out->channel_off = (uint32_t)path;
    out->channel_len = (uint32_t)plen;
    return end;
}

int hs_absorb_pongs(const uint8_t *d, size_t len, int *aligned)
{
    int frames = 0, pong = 0;
    size_t i = 0;
    while (i < len) {
        if (len - i < 2)
            goto partial;
        uint8_t b0 = d[i], b1 = d[i + 1];
        uint64_t plen = b1 & 0x7f;
        size_t head = (plen == 126 ? 4 : plen == 127 ? 10 : 2) + (b1 & 0x80 ? 4 : 0);
        if (len - i < head)
            goto partial;
        if (plen == 126) {
            plen = (uint64_t)d[i + 2] << 8 | d[i + 3];
        } else if (plen == 127) {
            plen = 0;
            for (size_t k = 0; k < 8; k++)
                plen = plen << 8 | d[i + 2 + k];
        }
        pong = b0 == 0x8A && (b1 & 0x80) && plen <= 125;
        if (plen > len - i - head)
            goto partial;
        i += head + (size_t)plen;
        frames++;
    }
    *aligned = 1;
    return frames == 1 && pong;
partial:
    *aligned = 0;
    return 0;
}
