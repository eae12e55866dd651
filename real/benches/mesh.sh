#!/usr/bin/env bash
# The data plane measured with a real HTTP load generator (Debian's `wrk`), on 3 shoal daemons on
# 127.0.0.91-93 with the Docker executor (release build; image shoal-test/busybox:latest, never
# pulled). Not part of CI.
#
# 1. Throughput and latency of one busybox httpd replica on node 2, in one run, three ways:
#    straight to the container's bridge address, through node 2's published port (the proxy, same
#    node), and through node 1's published port (proxy + mutual-TLS tunnel to node 2's daemon).
#    The ratios to "direct" are what the mesh costs.
# 2. Failed requests during a rolling update of 10 replicas under wrk load (parallelism 2, delay
#    0; each request takes 200 ms; the server exits at once on SIGTERM), with draining on (the
#    default) and off (`shoal daemon --no-mesh-drain`).
#
# Usage: bash real/benches/mesh.sh            (DURATION=10 CONNECTIONS=16 ROUNDS=2 to change;
#        PART=1 or PART=2 runs one part only)
# Needs: root, Docker, wrk (apt-get install wrk), ab (apt-get install apache2-utils), the local image shoal-test/busybox:latest.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-16}
ROUNDS=${ROUNDS:-2}
IMAGE=shoal-test/busybox:latest
SERVE='mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www'
# For the rolling update: /cgi-bin/slow answers after 200 ms (requests are in flight when a replica
# stops), and the server exits at once on SIGTERM, as most servers do (httpd as PID 1 would ignore it).
# Its answer says Content-Length and Connection: close, or wrk counts every answer as an error.
SERVE_SLOW='mkdir -p /www/cgi-bin && hostname > /www/index.html && printf "#!/bin/sh\nsleep 0.2\nprintf \"Content-Type: text/plain\\\\r\\\\nContent-Length: 13\\\\r\\\\nConnection: close\\\\r\\\\n\\\\r\\\\n\"\nhostname\n" > /www/cgi-bin/slow && chmod +x /www/cgi-bin/slow; trap "exit 0" TERM; httpd -f -p 80 -h /www & wait'
IPS=(127.0.0.91 127.0.0.92 127.0.0.93)
PORT=18080

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
command -v ab >/dev/null || { echo "ab is missing: apt-get install apache2-utils" >&2; exit 1; }
AB_REQUESTS=${AB_REQUESTS:-20000}
docker image inspect "$IMAGE" >/dev/null || { echo "the image $IMAGE is missing (bash .ci/run builds it)" >&2; exit 1; }
cargo build --release -q -p shoal
S="${CARGO_TARGET_DIR:-$PWD/target}/release/shoal"
WORK=$(mktemp -d)
PIDS=()
NODE_IDS=()

sh_on() { local n=$1; shift; "$S" -H "unix://$WORK/n$n.sock" "$@"; }

start_cluster() {
    local extra=("$@")
    PIDS=()
    for n in 1 2 3; do
        "$S" daemon --data-dir "$WORK/n$n" --socket "$WORK/n$n.sock" --executor docker --hostname "bench-$n" \
            --dns-upstream none "${extra[@]}" >"$WORK/n$n.log" 2>&1 &
        PIDS+=($!)
    done
    for n in 1 2 3; do
        for _ in $(seq 100); do sh_on $n info >/dev/null 2>&1 && break; sleep 0.1; done
    done
    sh_on 1 swarm init --advertise-addr ${IPS[0]}:12377 --listen-addr ${IPS[0]}:12377 --data-path-port 24791 \
        --dispatcher-heartbeat 1s >/dev/null
    local token
    token=$(sh_on 1 swarm join-token -q worker)
    for n in 2 3; do
        sh_on $n swarm join --token "$token" --advertise-addr ${IPS[$((n - 1))]}:12377 \
            --listen-addr ${IPS[$((n - 1))]}:12377 --data-path-port $((24790 + n)) ${IPS[0]}:12377 >/dev/null
    done
    mapfile -t NODE_IDS < <(sh_on 1 node ls -q)
}

stop_cluster() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
    for id in "${NODE_IDS[@]}"; do
        docker ps -aq --filter "label=com.shoal.node.id=$id" | xargs -r docker rm -f >/dev/null
        docker network ls -q --filter "label=com.shoal.node.id=$id" | xargs -r docker network rm >/dev/null
    done
    NODE_IDS=()
    rm -rf "${WORK:?}"/n*
}
trap 'stop_cluster; rm -rf "$WORK"' EXIT

wait_http() {
    for _ in $(seq 300); do
        [ "$(curl_like "$1")" != "" ] && return 0
        sleep 0.1
    done
    echo "nothing answers on $1" >&2
    return 1
}

# A GET without curl: bash's /dev/tcp.
curl_like() {
    local host=${1%:*} port=${1#*:}
    timeout 3 bash -c "exec 3<>/dev/tcp/$host/$port && printf 'GET / HTTP/1.0\r\n\r\n' >&3 && cat <&3" 2>/dev/null |
        tail -1 || true
}

# wrk against $1 for $DURATION s: "requests/s p50 p99 errors abp99". wrk starts a request's clock
# once its connection is open, so a connect that waits (a SYN dropped by a full listen queue: 1 s)
# is not in its latency when the client connects straight to the server, but is when a proxy has
# already accepted the client; ab (Apache's, from apache2-utils) times connect + request, the same
# on every path: abp99 is its 99th percentile of that, in ms.
measure() {
    local out rps p50 p99 errors abp99
    abp99=$(ab -q -n "$AB_REQUESTS" -c "$CONNECTIONS" "http://$1/" 2>&1 | awk '$1 == "99%" {print $2}')
    out=$(wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://$1/" 2>&1)
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    errors=$(awk '/Socket errors:/ {gsub(",", ""); s += $4 + $6 + $8 + $10} /Non-2xx/ {s += $NF} END {print s + 0}' <<<"$out")
    if [ "$errors" != 0 ]; then grep -E "Socket errors|Non-2xx" <<<"$out" >&2; fi
    echo "$rps $p50 $p99 $errors ${abp99:-n/a}"
}

if [ "${PART:-all}" != 2 ]; then
echo "== 1. throughput and latency (wrk -t2 -c$CONNECTIONS -d${DURATION}s, $ROUNDS rounds, busybox httpd, no keep-alive)"
start_cluster
sh_on 1 service create --name bench --constraint node.hostname==bench-2 -p $PORT:80 "$IMAGE" sh -c "$SERVE" >/dev/null
container=$(docker ps -q --filter label=com.shoal.service.name=bench)
direct="$(docker inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$container"):80"
wait_http "$direct"
wait_http "${IPS[1]}:$PORT"
wait_http "${IPS[0]}:$PORT"
declare -A RPS P50 P99 ERR ABP99
for round in $(seq "$ROUNDS"); do
    for path in direct local remote; do
        case $path in
            direct) target=$direct ;;
            local) target=${IPS[1]}:$PORT ;;
            remote) target=${IPS[0]}:$PORT ;;
        esac
        read -r rps p50 p99 errors abp99 < <(measure "$target")
        echo "round $round  $path ($target): $rps req/s, p50 $p50, p99 $p99, errors $errors; ab p99 (connect included) ${abp99} ms"
        ABP99[$path]="${ABP99[$path]:-} $abp99"
        RPS[$path]="${RPS[$path]:-} $rps"
        P50[$path]="${P50[$path]:-} $p50"
        P99[$path]="${P99[$path]:-} $p99"
    done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
to_ms() { sed -E 's/([0-9.]+)us/\1 0.001/; s/([0-9.]+)ms/\1 1/; s/([0-9.]+)s$/\1 1000/' | awk '{printf "%.3f\n", $1 * $2}'; }
for path in direct local remote; do
    rps=$(median <<<"${RPS[$path]}")
    p50=$(for v in ${P50[$path]}; do to_ms <<<"$v"; done | median)
    p99=$(for v in ${P99[$path]}; do to_ms <<<"$v"; done | median)
    abp99=$(median <<<"${ABP99[$path]}")
    printf '%-7s median %9.1f req/s  p50 %7.3f ms  p99 %7.3f ms  ab p99 (connect included) %s ms\n' "$path" "$rps" "$p50" "$p99" "$abp99"
    eval "M_RPS_$path=$rps M_P50_$path=$p50 M_P99_$path=$p99 M_AB_$path=$abp99"
done
awk -v d="$M_RPS_direct" -v l="$M_RPS_local" -v r="$M_RPS_remote" \
    'BEGIN {printf "throughput ratio to direct: local %.2f, remote %.2f\n", l / d, r / d}'
awk -v d="$M_P99_direct" -v l="$M_P99_local" -v r="$M_P99_remote" \
    'BEGIN {printf "added p99 latency: local %+.3f ms, remote %+.3f ms\n", l - d, r - d}'
awk -v d="$M_AB_direct" -v l="$M_AB_local" -v r="$M_AB_remote" \
    'BEGIN {printf "added p99 latency, connect included (ab): local %+d ms, remote %+d ms\n", l - d, r - d}'
stop_cluster
fi

rolling_update() {
    local label=$1
    shift
    start_cluster "$@"
    sh_on 1 service create --name roll --replicas 10 -p $PORT:80 \
        --update-parallelism 2 --update-delay 0s "$IMAGE" sh -c "$SERVE_SLOW" >/dev/null
    for ip in "${IPS[@]}"; do wait_http "$ip:$PORT"; done
    sleep 2
    local started out
    wrk -t2 -c20 -d60s "http://${IPS[0]}:$PORT/cgi-bin/slow" >"$WORK/wrk1.txt" 2>&1 &
    local w1=$!
    wrk -t2 -c20 -d60s "http://${IPS[2]}:$PORT/cgi-bin/slow" >"$WORK/wrk3.txt" 2>&1 &
    local w3=$!
    sleep 3
    started=$(date +%s.%N)
    sh_on 1 service update --force roll >/dev/null
    local took
    took=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
    wait $w1 $w3
    for f in "$WORK/wrk1.txt" "$WORK/wrk3.txt"; do
        out=$(cat "$f")
        local total errors
        total=$(awk '/requests in/ {print $1}' <<<"$out")
        errors=$(awk '/Socket errors:/ {gsub(",", ""); s += $4 + $6 + $8 + $10} /Non-2xx/ {s += $NF} END {print s + 0}' <<<"$out")
        echo "$label: update of 10 took ${took}s; $(basename "$f" .txt): $total requests, $errors failed"
    done
    stop_cluster
}

if [ "${PART:-all}" != 1 ]; then
echo "== 2. rolling update of 10 replicas under load (2 x wrk -t2 -c20 -d60s on /cgi-bin/slow, 200 ms, via nodes 1 and 3)"
rolling_update "draining on"
rolling_update "draining off" --no-mesh-drain
fi
