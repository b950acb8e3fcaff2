#!/usr/bin/env bash
# protocol.sh: raw-socket protocol edges of `tdlab serve` (libmicrohttpd 0.9.75 underneath).
#
# Usage: tests/protocol.sh path/to/tdlab          (called by tests/e2e.sh)
#
# Starts its own daemon with --conn-timeout 2 and sends malformed or hostile requests over a
# plain TCP socket (python3, no HTTP library), each with a client-side timeout. Each check
# says what must come back:
#   - what reaches tdlab is answered with the JSON envelope {"error":{"code","message",...}}
#     and, when the framing is in doubt, "Connection: close" and a closed socket:
#     duplicate Content-Length, Content-Length with Transfer-Encoding, HTTP/1.1 without Host,
#     two Host headers, a header name with a space, a raw space or control byte in the target;
#   - what libmicrohttpd answers itself before any handler runs (README "Protocol errors"):
#     a 414/431 for a head over 32 KiB, 505 for an unknown version, 400 for a request line
#     without a version, a closed socket for "HELLO": answered or closed at once, never left
#     open;
#   - bare LF line endings are accepted (RFC 7230 3.5 allows it) and answered;
#   - a slowloris head (one header line a second, never finished) is closed within the
#     connection timeout plus the reaper's 1 s tick, and so is a silent connection;
#   - the daemon is still healthy at the end.
# Prints one line per check and "N passed, M failed"; exits non-zero on a failure.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=tests/e2elib.sh
. "$ROOT/tests/e2elib.sh"
e2e_init proto "$@"
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

CONN_TIMEOUT=2
e2e_start --workers 1 --conn-timeout "$CONN_TIMEOUT"
ok "the daemon starts ($SRV_BASE, --conn-timeout $CONN_TIMEOUT)"

# The client: each case is NAME|EXPECT, with EXPECT one of
#   json:STATUS[:close]  the JSON error envelope with this status (and the socket closed)
#   mhd:STATUS           libmicrohttpd's own answer with this status, socket closed at once
#   closed               the socket is closed without an answer, at once
#   ok200                a 200 answer
#   reaped               the socket is closed by the server within CONN_TIMEOUT + 2 s
"$PY" - "$SRV_PORT" "$CONN_TIMEOUT" >"$TMP/proto.out" 2>&1 <<'PYEOF'
import json, select, socket, sys, time
port, tmo = int(sys.argv[1]), float(sys.argv[2])

def exchange(data, wait, slow=None):
    """Send data (or the chunks of slow=(chunks, gap)); read until EOF or `wait` seconds.
    Returns (bytes, seconds until EOF or None when the socket stayed open)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=wait)
    t0 = time.time()
    buf, eof = b"", None
    try:
        if slow:
            chunks, gap = slow
            for c in chunks:
                s.sendall(c)
                r, _, _ = select.select([s], [], [], gap)
                if r:  # the server answered or closed: stop sending, read below
                    break
        else:
            s.sendall(data)
        s.settimeout(max(0.1, wait - (time.time() - t0)))
        while True:
            d = s.recv(65536)
            if not d:
                eof = time.time() - t0
                break
            buf += d
    except socket.timeout:
        pass
    except (ConnectionResetError, BrokenPipeError):
        eof = time.time() - t0
    finally:
        s.close()
    return buf, eof

def parse(buf):
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    try:
        status = int(lines[0].split()[1])
    except Exception:
        status = None
    hdrs = {}
    for l in lines[1:]:
        k, _, v = l.partition(b":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, body

def is_envelope(body):
    try:
        e = json.loads(body)["error"]
        return isinstance(e["code"], str) and isinstance(e["message"], str) and "field" in e
    except Exception:
        return False

H = b"Host: t\r\n"
J = b"Content-Type: application/json\r\n"
cases = [
    ("duplicate Content-Length (different values)", "json:400:close",
     b"POST /api/v1/jobs HTTP/1.1\r\n" + H + J + b"Content-Length: 2\r\nContent-Length: 5\r\n\r\n{}"),
    ("duplicate Content-Length (equal values)", "json:400:close",
     b"POST /api/v1/jobs HTTP/1.1\r\n" + H + J + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}"),
    ("Content-Length with Transfer-Encoding: chunked", "json:400:close",
     b"POST /api/v1/jobs HTTP/1.1\r\n" + H + J + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("HTTP/1.1 without Host", "json:400:close", b"GET /healthz HTTP/1.1\r\n\r\n"),
    ("two Host headers", "json:400:close", b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    ("a header name with a space", "json:400:close", b"GET /healthz HTTP/1.1\r\n" + H + b"Bad Name: v\r\n\r\n"),
    ("a raw space in the request target", "json:400:close", b"GET /api/v1/jobs?tag=a b HTTP/1.1\r\n" + H + b"\r\n"),
    ("a raw control byte in the request target", "json:400:close", b"GET /healthz\x01 HTTP/1.1\r\n" + H + b"\r\n"),
    ("an unknown route (reaches tdlab)", "json:404", b"GET /api/v1/nope HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n"),
    ("HELLO", "closed", b"HELLO\r\n\r\n"),
    ("a request line without a version", "mhd:400", b"GET /healthz\r\n\r\n"),
    ("GET / HTTP/9.9", "mhd:505", b"GET / HTTP/9.9\r\n" + H + b"\r\n"),
    ("a 100 KB URI", "mhd:414", b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\n" + H + b"\r\n"),
    ("a 100 KB header", "mhd:431", b"GET /healthz HTTP/1.1\r\n" + H + b"X-Big: " + b"b" * 100000 + b"\r\n\r\n"),
    ("5000 small headers", "mhd:431", b"GET /healthz HTTP/1.1\r\n" + H + b"".join(b"X-%d: v\r\n" % i for i in range(5000)) + b"\r\n"),
    ("Content-Length not a number", "mhd:400", b"POST /api/v1/jobs HTTP/1.1\r\n" + H + J + b"Content-Length: abc\r\n\r\n{}"),
    ("bare LF line endings", "ok200", b"GET /healthz HTTP/1.1\nHost: t\nConnection: close\n\n"),
    ("HTTP/1.0 without Host", "ok200", b"GET /healthz HTTP/1.0\r\n\r\n"),
    ("slowloris: a header line a second, never finished", "reaped",
     ([b"GET /healthz HTTP/1.1\r\n", H] + [b"X-%d: v\r\n" % i for i in range(int(tmo) + 6)], 1.0)),
    ("a connection that sends nothing", "reaped", b""),
    ("bytes that never form a line", "reaped", b"\x16\x03\x01\x02\x00\x01\x00"),
]
for name, expect, data in cases:
    slow = data if isinstance(data, tuple) else None
    wait = tmo + 8 if expect == "reaped" else 5.0
    buf, eof = exchange(None if slow else data, wait, slow)
    status, hdrs, body = parse(buf)
    kind = expect.split(":")
    ok, why = True, ""
    if kind[0] == "json":
        ok = status == int(kind[1]) and is_envelope(body) and \
             hdrs.get(b"content-type", b"").startswith(b"application/json")
        if ok and len(kind) > 2:
            ok = hdrs.get(b"connection", b"").lower() == b"close" and eof is not None and eof < 2
    elif kind[0] == "mhd":
        ok = status == int(kind[1]) and eof is not None and eof < 2
    elif kind[0] == "closed":
        ok = buf == b"" and eof is not None and eof < 2
    elif kind[0] == "ok200":
        ok = status == 200 and b'"status":"ok"' in body
    elif kind[0] == "reaped":
        # slowloris: the head started at 0 s; the reaper closes it after tmo (+1 s tick).
        ok = eof is not None and eof <= tmo + 4
    first = buf.split(b"\r\n")[0][:60]
    print(("ok" if ok else "FAIL") + " | %s -> %s | got %r, closed after %s s" %
          (name, expect, first, "%.1f" % eof if eof is not None else "never"))
PYEOF
while IFS= read -r line; do
  case "$line" in
    "ok | "*) ok "${line#ok | }" ;;
    "FAIL | "*) bad "${line#FAIL | }" ;;
    *) bad "client: $line" ;;
  esac
done <"$TMP/proto.out"

code=$(curl -s -o "$TMP/h" -w '%{http_code}' --max-time 5 "$SRV_BASE/healthz")
if [ "$code" = 200 ] && kill -0 "$SRV_PID" 2>/dev/null; then ok "the daemon is healthy afterwards"; else bad "the daemon is healthy afterwards (got $code)"; fi
finish
