#!/bin/bash
# A million subscribers held by bench/storm.c, an independent C client, against
# `ringcast serve` with its default keepalive (issue 18: "the same run with an
# independent client agrees" with `ringcast loadtest`'s one-command run).
#
# Run as root on an otherwise idle machine: the load runs in a network namespace of
# its own, made after raising net.ipv4.tcp_child_ehash_entries (see docs/scaling.md,
# "A million subscribers"), so it gets a large established-socket hash and no
# connection tracking. PROCS storm.c processes each hold N/PROCS subscribers of their
# own channel, from their own 40 loopback source addresses; once all are connected,
# nothing is published for HOLD seconds (every idle subscriber gets keepalive pings,
# every 25 s by default, and answers them), then every channel gets MESSAGES messages
# by POST /publish, 5 s apart. The storm processes are stopped 20 s after the last one
# and report how many subscribers are still open and how many messages each got.
#
#   sudo bench/million_independent.sh            # N=1000000 PROCS=64 WORKERS=64 HOLD=60
#
# Raw output: bench/results/tmp/million-independent/ (one JSON line per event per
# process, as storm.c prints them); the summary goes to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000000} PROCS=${PROCS:-64} WORKERS=${WORKERS:-64} HOLD=${HOLD:-60}
MESSAGES=${MESSAGES:-3} PORT=${PORT:-8090}
OUT=bench/results/tmp/million-independent
NS=ringcast-million
mkdir -p "$OUT" && rm -f "$OUT"/*
gcc -O2 -Wall -Wextra -o bench/results/tmp/storm bench/storm.c
sysctl -qw net.ipv4.tcp_child_ehash_entries=4194304
ip netns del "$NS" 2>/dev/null || true
ip netns add "$NS"
trap 'ip netns pids "$NS" 2>/dev/null | xargs -r kill -9; ip netns del "$NS"' EXIT
ip netns exec "$NS" ip link set lo up
export N PROCS WORKERS HOLD MESSAGES PORT OUT
ip netns exec "$NS" bash -euo pipefail <<'INNER'
ulimit -n 20000
echo "# $(date -u +%FT%TZ): ringcast $(git rev-parse --short HEAD), $N subscribers," \
     "$PROCS storm.c processes, $WORKERS workers, hold ${HOLD}s, $MESSAGES messages a channel"
RINGCAST_SERVER_WORKERS=$WORKERS .venv/bin/ringcast serve --port "$PORT" \
    > "$OUT/server.log" 2>&1 &
server=$!
for _ in $(seq 150); do  # up to 30 s for the workers to listen
    curl -sf "http://127.0.0.1:$PORT/healthz" > /dev/null && break
    sleep 0.2
done
start=$(date +%s.%N)
per=$((N / PROCS))
storms=()
for k in $(seq 0 $((PROCS - 1))); do
    net=$((k + 1))
    bench/results/tmp/storm hold --port "$PORT" -n "$per" -c 256 \
        --src "127.$net.0.1-127.$net.0.40" --channel "c$k" --label "p$k" --duration 1800 \
        > "$OUT/p$k.jsonl" 2> "$OUT/p$k.err" &
    storms+=($!)
done
deadline=$(( $(date +%s) + 900 ))
until [ "$(cat "$OUT"/p*.jsonl | grep -c '"event":"connected"')" -ge "$PROCS" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "not all connected within 900 s"; break; }
    sleep 1
done
echo "all $PROCS processes connected after $(echo "$(date +%s.%N) - $start" | bc) s"
sleep "$HOLD"
for m in $(seq "$MESSAGES"); do
    for k in $(seq 0 $((PROCS - 1))); do
        curl -sf -X POST --data "message $m" "http://127.0.0.1:$PORT/publish/c$k" > /dev/null
    done
    sleep 5
done
sleep 20
kill -TERM "${storms[@]}"
wait "${storms[@]}" || true
kill -TERM "$server"
wait "$server" || true
INNER
python3 - "$OUT" "$N" "$MESSAGES" <<'SUMMARY'
import json, pathlib, sys
out, n, messages = pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
lines = [json.loads(l) for f in sorted(out.glob("p*.jsonl")) for l in f.read_text().splitlines()]
connected = [l for l in lines if l["event"] == "connected"]
reports = [l["messages"] for l in lines if l["event"] == "report"]
opened = sum(l["connect"]["opened"] for l in connected)
failed = sum(l["connect"]["failed"] for l in connected)
still_open = sum(r["open"] for r in reports)
fewest, most = min(r["min"] for r in reports), max(r["max"] for r in reports)
total = lambda key: sum(r[key] for r in reports)
print(f"opened {opened:,} of {n:,} (failed {failed}); open at the end {still_open:,}; "
      f"messages per subscriber {fewest}..{most} of {messages}; pings answered "
      f"{total('pings'):,}; closed by the server {total('server_closes')}, eof "
      f"{total('eof')}, reset {total('reset')}, protocol errors {total('protocol_errors')}")
ok = opened == still_open == n and fewest == most == messages and not total("server_closes")
print("PASS" if ok else "FAIL")
SUMMARY
