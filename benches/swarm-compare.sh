#!/usr/bin/env bash
# shoal vs Docker Swarm on this machine: the same engine, the same local image, the same operations,
# timed from the command to the state a user waits for (polled every 100 ms, so figures are ±0.1 s).
#
#   bash benches/swarm-compare.sh            # all cases, both systems; ROUNDS=3 repetitions (median shown)
#   SHOAL_BIN=target/release/shoal ROUNDS=5 bash benches/swarm-compare.sh
#   ROUNDS=0 FAILURE_ROUNDS=3 bash benches/swarm-compare.sh   # only shoal's node-failure case
#
# Cases: service create with 1/10/50 replicas → all running; scale 10→50; self-heal (a task's
# container killed → a new task running); rolling update of 10 replicas (parallelism 2, delay 0,
# monitor 1 s); node failure (shoal only: SIGKILL a worker daemon of 1 manager + 2 workers → its
# tasks running elsewhere; single-node Swarm has no other node to move tasks to).
#
# Both systems run on one node for the first four cases (shoal: one manager daemon with the Docker
# executor on 127.0.0.71); both use Swarm's defaults otherwise (restart delay 5 s, heartbeat 5 s).
# Swarm: `docker swarm init --advertise-addr 127.0.0.1` on the local engine; the image is passed by
# ID with --no-resolve-image so nothing contacts a registry; the engine always leaves swarm mode at
# the end (trap). Nothing is pulled. Not part of CI.
set -euo pipefail

cd "$(dirname "$0")/.."
IMAGE_REF=shoal-test/busybox:latest
IMAGE_ID=$(docker image inspect -f '{{.Id}}' "$IMAGE_REF")
ROUNDS=${ROUNDS:-3}
SHOAL=${SHOAL_BIN:-target/release/shoal}
if [[ ! -x $SHOAL ]]; then
    cargo build --release -p shoal
    SHOAL=target/release/shoal
fi
SHOAL=$(realpath "$SHOAL")
WORK=$(mktemp -d /tmp/swarm-compare.XXXXXX)
RESULTS=$WORK/results.tsv
DAEMON_PIDS=()
CMD=(sleep 100000)

log() { printf '%s\n' "$*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# Poll `$@` until it succeeds, at most $TIMEOUT seconds (default 180).
wait_until() {
    local deadline=$(($(date +%s) + ${TIMEOUT:-180}))
    until "$@"; do
        if (($(date +%s) > deadline)); then
            log "timed out waiting for: $*"
            return 1
        fi
        sleep 0.1
    done
}

record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RESULTS"; }

cleanup() {
    local status=$?
    set +e
    docker swarm leave --force >/dev/null 2>&1
    for pid in "${DAEMON_PIDS[@]}"; do
        kill "$pid" 2>/dev/null
    done
    for pid in "${DAEMON_PIDS[@]}"; do
        wait "$pid" 2>/dev/null
    done
    local leftovers
    leftovers=$(docker ps -aq --filter label=com.shoal.service.name 2>/dev/null)
    [[ -n $leftovers ]] && docker rm -f $leftovers >/dev/null 2>&1
    [[ -s $RESULTS ]] && cp "$RESULTS" "${RESULTS_OUT:-/tmp/swarm-compare-results.tsv}"
    if ((status == 0)); then
        rm -rf "$WORK"
    else
        log "failed; daemon logs kept in $WORK"
    fi
}
trap cleanup EXIT INT TERM

# ---------------------------------------------------------------- Docker Swarm
sw_running() { # service, n: exactly n tasks desired and actually running
    local count
    count=$(docker service ps "$1" -f desired-state=running --format '{{.CurrentState}}' 2>/dev/null | grep -c '^Running' || true)
    [[ $count -eq $2 ]]
}
sw_gone() { [[ -z $(docker ps -aq --filter "label=com.docker.swarm.service.name=$1") ]]; }
sw_create() { docker service create --detach --quiet --no-resolve-image --name "$1" --replicas "$2" \
    --stop-grace-period 1s "${@:3}" "$IMAGE_ID" "${CMD[@]}" >/dev/null; }
sw_rm() { docker service rm "$1" >/dev/null && wait_until sw_gone "$1"; }
sw_updated() { # every slot replaced: n running and n shut down
    local states
    states=$(docker service ps "$1" --format '{{.DesiredState}} {{.CurrentState}}')
    [[ $(grep -c '^Running Running' <<<"$states") -eq $2 && $(grep -c '^Shutdown' <<<"$states") -ge $2 ]]
}
sw_one_container() { docker ps -q --filter "label=com.docker.swarm.service.name=$1" | head -n1; }
# service, n, killed container, label: the killed container has stopped, n containers of the service
# run again (so one is new), and the orchestrator reports n tasks running.
replaced() {
    # shoal removes a failed task's container at once; Swarm keeps it, stopped, as history.
    [[ $(docker inspect -f '{{.State.Running}}' "$3" 2>/dev/null || echo removed) != true ]] &&
        [[ $(docker ps -q --filter "label=$4=$1" | wc -l) -eq $2 ]]
}
sw_replaced() { replaced "$1" "$2" "$3" com.docker.swarm.service.name && sw_running "$1" "$2"; }

bench_swarm() {
    log "== Docker Swarm"
    docker swarm init --advertise-addr 127.0.0.1 >/dev/null
    local round n t c
    for round in $(seq "$ROUNDS"); do
        for n in 1 10 50; do
            t=$(now); sw_create "cmp$n" "$n"; wait_until sw_running "cmp$n" "$n"
            record swarm "create $n" "$(since "$t")"; sw_rm "cmp$n"
        done
        sw_create cmps 10; wait_until sw_running cmps 10
        t=$(now); docker service scale --detach cmps=50 >/dev/null 2>&1; wait_until sw_running cmps 50
        record swarm "scale 10→50" "$(since "$t")"; sw_rm cmps

        sw_create cmph 10; wait_until sw_running cmph 10
        c=$(docker inspect -f '{{.Id}}' "$(sw_one_container cmph)")
        t=$(now); docker kill "$c" >/dev/null; wait_until sw_replaced cmph 10 "$c"
        record swarm "self-heal" "$(since "$t")"; sw_rm cmph

        sw_create cmpu 10 --update-parallelism 2 --update-delay 0s --update-monitor 1s; wait_until sw_running cmpu 10
        t=$(now); docker service update --detach --quiet --env-add V=2 cmpu >/dev/null; wait_until sw_updated cmpu 10
        record swarm "rolling update 10 (par 2)" "$(since "$t")"; sw_rm cmpu
    done
    docker swarm leave --force >/dev/null
}

# ---------------------------------------------------------------- shoal
start_daemon() { # name ip → sets SOCK_<name>
    local dir=$WORK/$1
    mkdir -p "$dir"
    "$SHOAL" daemon --executor docker --pull never --hostname "$1" --data-dir "$dir/data" --socket "$dir/sock" 2>"$dir/log" &
    DAEMON_PIDS+=($!)
    eval "PID_$1=$!"
    wait_until test -S "$dir/sock"
}
sh_running() { # service n [excluded node]: n tasks desired and running (none on the excluded node)
    local rows count
    rows=$(sctl m ps_json "$1")
    count=$(jq -r --arg x "${3:-}" 'select(.DesiredState == "Running" and (.CurrentState | startswith("Running")) and .Node != $x) | .ID' <<<"$rows" | wc -l)
    [[ $count -eq $2 ]]
}
sh_gone() { [[ -z $(docker ps -aq --filter "label=com.shoal.service.name=$1") ]]; }
sh_create() { sctl m service create --detach --name "$1" --replicas "$2" --stop-grace-period 1s "${@:3}" \
    "$IMAGE_ID" "${CMD[@]}" >/dev/null; }
sh_rm() { sctl m service rm "$1" >/dev/null && wait_until sh_gone "$1"; }
sh_updated() {
    local rows
    rows=$(sctl m ps_json "$1")
    [[ $(jq -r 'select(.DesiredState == "Running" and (.CurrentState | startswith("Running"))) | .ID' <<<"$rows" | wc -l) -eq $2 &&
        $(jq -r 'select(.DesiredState == "Shutdown") | .ID' <<<"$rows" | wc -l) -ge $2 ]]
}
sh_replaced() { replaced "$1" "$2" "$3" com.shoal.service.name && sh_running "$1" "$2"; }

bench_shoal() {
    log "== shoal ($SHOAL)"
    start_daemon m 127.0.0.71
    sctl m swarm init --advertise-addr 127.0.0.71:23771 --listen-addr 127.0.0.71:23771 >/dev/null
    local round n t c
    for round in $(seq "$ROUNDS"); do
        for n in 1 10 50; do
            t=$(now); sh_create "cmp$n" "$n"; wait_until sh_running "cmp$n" "$n"
            record shoal "create $n" "$(since "$t")"; sh_rm "cmp$n"
        done
        sh_create cmps 10; wait_until sh_running cmps 10
        t=$(now); sctl m service scale --detach cmps=50 >/dev/null; wait_until sh_running cmps 50
        record shoal "scale 10→50" "$(since "$t")"; sh_rm cmps

        sh_create cmph 10; wait_until sh_running cmph 10
        c=$(docker inspect -f '{{.Id}}' "$(docker ps -q --filter label=com.shoal.service.name=cmph | head -n1)")
        t=$(now); docker kill "$c" >/dev/null; wait_until sh_replaced cmph 10 "$c"
        record shoal "self-heal" "$(since "$t")"; sh_rm cmph

        sh_create cmpu 10 --update-parallelism 2 --update-delay 0s --update-monitor 1s; wait_until sh_running cmpu 10
        t=$(now); sctl m service update --detach --env-add V=2 cmpu >/dev/null; wait_until sh_updated cmpu 10
        record shoal "rolling update 10 (par 2)" "$(since "$t")"; sh_rm cmpu
    done

    # Node failure: two workers join; 10 replicas spread; one worker daemon is SIGKILLed.
    local token
    token=$(sctl m swarm join-token -q worker)
    for w in w1 w2; do
        local ip=127.0.0.7$([[ $w == w1 ]] && echo 2 || echo 3)
        start_daemon "$w" "$ip"
        sctl "$w" swarm join --token "$token" --advertise-addr "$ip:23771" --listen-addr "$ip:23771" 127.0.0.71:23771 >/dev/null
    done
    # Placement happens at create: both workers must be ready to get their share.
    wait_until sh_node_ready w1
    wait_until sh_node_ready w2
    for round in $(seq "${FAILURE_ROUNDS:-$ROUNDS}"); do
        sh_create cmpf 10; wait_until sh_running cmpf 10
        local victim=w$((round % 2 + 1)) victim_pid
        victim_pid=PID_$victim
        wait_until sh_has_tasks_on cmpf "$victim"
        t=$(now); kill -KILL "${!victim_pid}"; wait "${!victim_pid}" 2>/dev/null || true
        wait_until sh_running cmpf 10 "$victim"
        record shoal "node failure (worker killed)" "$(since "$t")"
        sh_rm_all cmpf
        # Bring the worker back for the next round (same data dir: it resumes its node).
        "$SHOAL" daemon --executor docker --pull never --hostname "$victim" --data-dir "$WORK/$victim/data" \
            --socket "$WORK/$victim/sock" 2>>"$WORK/$victim/log" &
        DAEMON_PIDS+=($!)
        eval "PID_$victim=$!"
        wait_until sh_node_ready "$victim"
    done
}
# (`jq -s` and `any`: with `-e` alone, jq's status reflects only the last line.)
sh_has_tasks_on() { sctl m ps_json "$1" | jq -se --arg n "$2" 'any(.[]; .Node == $n and .DesiredState == "Running")' >/dev/null; }
sh_node_ready() { sctl m node ls --format json | jq -se --arg n "$1" 'any(.[]; .Hostname == $n and .Status == "Ready")' >/dev/null; }
sh_rm_all() { # the killed daemon's containers stay (a crashed host's would too); remove them as well
    sctl m service rm "$1" >/dev/null
    local ids
    ids=$(docker ps -aq --filter "label=com.shoal.service.name=$1")
    [[ -n $ids ]] && docker rm -f $ids >/dev/null
    return 0
}

# The shoal CLI against daemon $1; `sctl m ps_json S` is `service ps S --format json` (a JSON object a line).
sctl() {
    local who=$1; shift
    if [[ ${1:-} == ps_json ]]; then
        "$SHOAL" -H "unix://$WORK/$who/sock" service ps "$2" --format json
    else
        "$SHOAL" -H "unix://$WORK/$who/sock" "$@"
    fi
}

command -v jq >/dev/null || { log "jq is required"; exit 1; }
[[ $(docker info -f '{{.Swarm.LocalNodeState}}') == inactive ]] || { log "the engine is already in swarm mode; refusing"; exit 1; }

: >"$RESULTS"
bench_swarm
bench_shoal

# Median per system and case, side by side.
log ""
awk -F'\t' '
    { key = $2; sys = $1; v[sys, key, ++n[sys, key]] = $3; if (!(key in seen)) { seen[key] = 1; order[++k] = key } }
    function median(sys, key,    m, i, j, t, a) {
        m = n[sys, key]; if (m == 0) return "n/a"
        for (i = 1; i <= m; i++) a[i] = v[sys, key, i]
        for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
        return (m % 2) ? a[(m + 1) / 2] : sprintf("%.2f", (a[m / 2] + a[m / 2 + 1]) / 2)
    }
    END {
        printf "| case | Docker Swarm (s) | shoal (s) | runs |\n|---|---|---|---|\n"
        for (i = 1; i <= k; i++) {
            key = order[i]
            printf "| %s | %s | %s | %d/%d |\n", key, median("swarm", key), median("shoal", key), n["swarm", key], n["shoal", key]
        }
    }' "$RESULTS"
log ""
log "all runs:"
cat "$RESULTS" >&2
