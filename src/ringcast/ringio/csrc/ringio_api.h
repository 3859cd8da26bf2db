/* ringio public API.
 *
 * This file is read by two parsers: the C compiler (through ringio.h) and
 * cffi's cdef parser (by _build.py). It must therefore hold plain
 * declarations only: no #include, no #define, no macros, no inline code.
 *
 * Contract in one paragraph: a loop owns a table of connection ids (small
 * integers, reused after close), a set of refcounted frame slots, and one
 * engine (io_uring, or epoll where io_uring is unavailable). Python creates
 * slots, fans them out to arrays of ids, and calls rio_reap() to wait; reap
 * returns a compact array of events (accepts, received bytes, hang-ups,
 * queue overflows). Every per-send completion is handled in C. No event is
 * ever dropped: when there is no room for one it waits for the next reap
 * (see "events" in core.c; st.events_deferred counts it).
 */

typedef struct rio_loop rio_loop;

/* Event kinds returned by rio_reap(). */
enum {
    RIO_EV_ACCEPT = 1,       /* conn: new id; res: its fd; aux: listener id        */
    RIO_EV_DATA = 2,         /* conn; len bytes at data + aux                      */
    RIO_EV_HUP = 3,          /* conn; res: 0 on peer EOF, else a positive errno    */
    RIO_EV_OVERFLOW = 4,     /* conn; res: 0; aux: bytes queued when it overflowed */
    RIO_EV_ACCEPT_ERROR = 5, /* conn: listener id; res: positive errno; accepting
                                stopped, call rio_resume_accept() to go on         */
    RIO_EV_REFUSED = 6,      /* conn: listener id; a connection arrived while the
                                id table was full and was closed at once           */
    RIO_EV_CLOSED = 7,       /* conn: a stream id the caller closed is free now (its
                                flush, linger and every operation on it are over);
                                the next ACCEPT may reuse it                       */
    RIO_EV_HEARTBEAT_TIMEOUT = 8, /* conn: no byte arrived within the timeout after a
                                heartbeat; its heartbeats are off from now on      */
};

/* Where rio_open() failed: its *stage. */
enum {
    RIO_STAGE_SETUP = 0,       /* io_uring_setup (the kernel refused the ring)      */
    RIO_STAGE_BUFFER_RING = 1, /* registering the provided-buffer ring              */
    RIO_STAGE_MEMORY = 2,      /* allocating the loop's memory                      */
    RIO_STAGE_EPOLL = 3,       /* epoll_create1                                     */
    RIO_STAGE_KERNEL = 4,      /* the kernel is older than 6.0 (no multishot recv)  */
    RIO_STAGE_PARAMS = 5,      /* the rio_params are invalid (err is EINVAL)        */
};

/* What rio_fanout()/rio_send() do with a queue past its cap. */
enum {
    RIO_SEND_CAPPED = 0,     /* respect cap: skip the conn, count a drop          */
    RIO_SEND_FORCE = 1,      /* ignore cap (control frames must go out)           */
};

/* How rio_close() ends a connection. */
enum {
    RIO_CLOSE_HARD = 0,      /* drop what is queued, FIN after what the kernel has */
    RIO_CLOSE_FLUSH = 1,     /* send what is queued first, then FIN and linger    */
    RIO_CLOSE_ABORT = 2,     /* drop everything, the kernel's buffers too: RST    */
};

typedef struct rio_event {
    uint32_t kind;
    uint32_t conn;
    int32_t res;
    uint32_t len;
    uint64_t aux;
} rio_event;

typedef struct rio_params {
    uint32_t sq_entries;      /* power of two                                      */
    uint32_t cq_entries;      /* >= sq_entries                                     */
    uint32_t buf_count;       /* provided receive buffers (power of two)           */
    uint32_t buf_size;        /* bytes per receive buffer                          */
    uint64_t arena_size;      /* registered frame memory; 0 = heap slots only      */
    uint32_t max_conns;       /* size of the id table (listeners count too)        */
    uint32_t zc_threshold;    /* frames >= this use SEND_ZC when allowed; 0 = off  */
    uint32_t zc_keep;         /* keep zero-copy for a peer even after the kernel
                                 reports it copied (for measuring only)            */
    uint32_t zc_loopback;     /* try zero-copy to loopback peers too (where the
                                 kernel always copies: for tests and measuring)   */
    uint32_t data_capacity;   /* bytes of received data returned per reap          */
    int32_t engine;           /* 0 = io_uring, 1 = epoll                           */
    uint32_t setup_flags;     /* io_uring setup flags to try first (fallback drops
                                 them one by one on EINVAL)                        */
    uint32_t event_limit;     /* events held at once, at most; 0 = as many as memory
                                 allows. For tests: a small limit (>= 3) takes the
                                 paths an allocation failure would take            */
} rio_params;

typedef struct rio_probe {
    int32_t engine;
    uint32_t setup_flags;     /* flags the ring was created with                   */
    uint32_t features;        /* IORING_FEAT_* reported by the kernel              */
    uint32_t sq_entries;
    uint32_t cq_entries;
    int32_t kernel_major;
    int32_t kernel_minor;
    int32_t ring_fd_registered;
    uint32_t fixed_files;     /* slots in the sparse file table, 0 if none       */
    int32_t fixed_files_errno;/* why registering the table failed, 0 if it did not */
    int32_t has_send_zc;
    int32_t has_recv_multishot;
    int32_t has_accept_multishot;
    int32_t arena_registered;
    int32_t arena_errno;      /* why registering the arena failed, 0 if it did not */
    int32_t zc_enabled;       /* zero-copy will be attempted                       */
} rio_probe;

typedef struct rio_stats {
    uint64_t submits;         /* io_uring_enter calls that submitted SQEs          */
    uint64_t sqes;            /* SQEs submitted                                    */
    uint64_t cqes;            /* CQEs reaped                                       */
    uint64_t waits;           /* rio_reap calls                                    */
    uint64_t accepts;
    uint64_t refused;         /* closed at once: id table full                     */
    uint64_t recv_bytes;
    uint64_t enobufs;         /* multishot recvs ended by an empty buffer ring     */
    uint64_t rearms;          /* recv/accept re-armed after their multishot ended  */
    uint64_t sends;           /* send operations issued (one may carry many slots) */
    uint64_t send_bytes;      /* bytes the kernel accepted                         */
    uint64_t short_sends;     /* sends that were resumed from where they stopped   */
    uint64_t coalesced;       /* sends that carried more than one queued slot      */
    uint64_t deliveries;      /* slot references queued by rio_fanout (not rio_send) */
    uint64_t drops;           /* slot references refused: queue over its cap       */
    uint64_t overflows;       /* RIO_EV_OVERFLOW events emitted                    */
    uint64_t zc_sends;
    uint64_t zc_copied;       /* notifications saying the kernel copied anyway     */
    uint64_t slots_live;      /* (the heartbeat's slot is not counted)             */
    uint64_t slots_heap;      /* live slots outside the registered arena           */
    uint64_t arena_used;      /* bytes of the arena in live slots                  */
    uint64_t queued_bytes;    /* bytes queued to all connections, not yet sent     */
    uint64_t conns_live;      /* ids in use (a closed id until its CLOSED is out)  */
    uint64_t events_deferred; /* an event found the event array full (it could not
                                 grow) and waited for the next reap: a connection
                                 held its HUP, OVERFLOW or CLOSED, or a drain left
                                 completions or ready sockets for later. Nothing
                                 is lost; a count that grows means memory is short */
    uint64_t submit_retries;  /* io_uring_enter answered EINTR, EAGAIN or EBUSY and
                                 was entered again (after reaping, for the last two) */
    uint64_t submit_errors;   /* io_uring_enter (or epoll_wait) failed for good: the
                                 loop has failed and rio_reap returns the error    */
    uint64_t heartbeats;      /* heartbeats queued to idle connections             */
    uint64_t heartbeat_replies; /* replies to heartbeats taken whole: no DATA event   */
    uint64_t heartbeat_timeouts; /* RIO_EV_HEARTBEAT_TIMEOUT events                */
    uint64_t heartbeat_unjudged; /* passes that judged nobody: the loop was behind  */
} rio_stats;

/* Lifecycle. rio_open returns NULL and sets *err (positive errno) and *stage
 * (RIO_STAGE_*) on failure. */
rio_loop *rio_open(const rio_params *params, int *err, int *stage);
void rio_destroy(rio_loop *loop);
void rio_get_probe(rio_loop *loop, rio_probe *out);
const rio_stats *rio_get_stats(rio_loop *loop);

/* Sockets. Return an id >= 0 or -errno. The loop owns the fd afterwards. */
int rio_listen(rio_loop *loop, int fd);
int rio_adopt(rio_loop *loop, int fd);
int rio_resume_accept(rio_loop *loop, uint32_t listener);
/* Close as `how` says (RIO_CLOSE_*). The id is reused only once every
 * operation on it has completed. */
int rio_close(rio_loop *loop, uint32_t conn, int how);
int64_t rio_queued(rio_loop *loop, uint32_t conn);
/* Drop the queued entries that have not started going out (those behind a
 * send in flight or a partly written head), so what is queued next follows
 * the bytes already on their way. Returns the bytes dropped, or -EBADF. */
int64_t rio_trim(rio_loop *loop, uint32_t conn);
/* The id's generation (bumped each time it is freed), or -EBADF if it is free:
 * lets a caller act later on "this connection" and not on a reuse of its id. */
int64_t rio_generation(rio_loop *loop, uint32_t conn);

/* Slots: refcounted frame memory. rio_slot_new copies len bytes and returns a
 * handle holding one reference (the caller's), or -errno. */
int64_t rio_slot_new(rio_loop *loop, const char *data, size_t len);
void rio_slot_put(rio_loop *loop, int64_t slot);

/* Queue the slot to n connections (skipping `exclude`, pass UINT32_MAX for
 * none). A connection whose queued bytes would pass `cap` gets nothing (a
 * drop) unless mode is RIO_SEND_FORCE. Returns the number of connections the
 * slot was queued to. The sends are prepared, not yet submitted: io_uring gets
 * them with the next rio_reap (one system call for every send of an
 * iteration), or earlier when the submission queue fills; epoll writes at once. */
int64_t rio_fanout(rio_loop *loop, int64_t slot, const uint32_t *conns, size_t n,
                   uint32_t exclude, uint64_t cap, int mode);
/* One connection, bytes copied into a new slot. Returns 1, 0 (dropped) or -errno. */
int rio_send(rio_loop *loop, uint32_t conn, const char *data, size_t len,
             uint64_t cap, int mode);

/* Heartbeats: keepalive without the caller's help per connection. Every
 * connection with heartbeats on (rio_heartbeat) that received nothing, or was
 * sent nothing, for interval_ms gets `slot` queued (a reference is kept; the
 * caller keeps its own), and one that then receives nothing for timeout_ms
 * more is reported (RIO_EV_HEARTBEAT_TIMEOUT). The loop looks at its
 * connections at most every min(1 s, interval/4, timeout/4).
 *
 * `absorb` (0: none) is the address of a function
 * `int absorb(const uint8_t *data, size_t len, int *aligned)` called on what
 * such a connection receives, while it is aligned: it returns 1 when the bytes
 * are one reply to a heartbeat (dropped, no DATA event, while a heartbeat is
 * outstanding; else they go up like any bytes) and sets *aligned to whether
 * they end where a reply could start (else it is not called again until
 * rio_heartbeat realigns the connection). The loop knows nothing of what the
 * bytes mean.
 *
 * interval_ms 0 turns heartbeats off. Returns 0 or -EINVAL (a bad slot, a
 * zero timeout). */
int rio_heartbeat_config(rio_loop *loop, uint32_t interval_ms, uint32_t timeout_ms,
                         int64_t slot, uintptr_t absorb);
/* Heartbeats on or off for one open stream (on: it counts as alive now), and
 * whether what it sends next starts where the absorber can read. 0 or -EBADF. */
int rio_heartbeat(rio_loop *loop, uint32_t conn, int on, int aligned);

/* Wait up to timeout_ms (-1 forever, 0 poll) and return the number of events.
 * Events and data stay valid until the next rio_reap call. A negative return
 * is -errno: the engine failed for good (io_uring_enter or epoll_wait refused
 * the loop's work; st.submit_errors), and every later call returns it too. The
 * loop can only be destroyed then. */
int rio_reap(rio_loop *loop, int timeout_ms);
/* 1 when the last reap left bytes that had arrived unread (no room for their
 * events, receives waiting to be re-armed, io_uring task_work its last enter
 * left, a full epoll batch): the next reap
 * returns more at once. A caller that times out silent peers waits until it is 0
 * (the loop's own heartbeats do). */
int rio_behind(rio_loop *loop);
rio_event *rio_events(rio_loop *loop);
const char *rio_data(rio_loop *loop);
