#!/usr/bin/env bash
# shoal vs Docker Swarm on this machine: the same engine, the same local image, the same operations,
# timed from the command to the state a user waits for (polled every 100 ms, so figures are ±0.1 s).
#
#   bash benches/swarm-compare.sh            # all cases, both systems; ROUNDS=3 repetitions (median shown)
#   SHOAL_BIN=target/release/shoal ROUNDS=5 bash benches/swarm-compare.sh
#   ROUNDS=0 FAILURE_ROUNDS=3 bash benches/swarm-compare.sh   # only shoal's node-failure case
#
# Cases ("create scale heal update failure cli" by default): service create with 1/10/50 replicas → all running; scale 10→50; self-heal, two ways (a
# task's container killed → a new task running): "killed at start" kills one as soon as all 10 run
# (the container ran well under 10 s), "killed after a healthy run" kills one that has run 12 s —
# for shoal once with Swarm's fixed 5 s restart delay (the default) and once with
# `--restart-backoff exponential`, which restarts a task that ran healthily (≥ 10 s) at once (Swarm
# has no such option: n/a); rolling update of 10 replicas (parallelism 2, delay 0, monitor 1 s);
# node failure (shoal only: SIGKILL a worker daemon of 1 manager + 2 workers → its tasks running
# elsewhere; single-node Swarm has no other node to move tasks to).
#
# Case "cli" (issue 15): the real `docker` CLI against both at once, shoal through its Engine API
# socket (DOCKER_HOST=unix://…) and Swarm on the engine: `docker service ls` and `docker node ls`
# alternated run by run ($CLI_RUNS each, default 20; a 10-replica service exists on both), and
# `docker service create --replicas 50` without --detach, which returns when the CLI's own progress
# display says the service converged. Per-run times, medians and the shoal/Swarm ratio of medians.
#
# Both systems run on one node for all but the last case (shoal: one manager daemon with the Docker
# executor on 127.0.0.71); both use Swarm's defaults otherwise (restart delay 5 s, heartbeat 5 s).
# Swarm: `docker swarm init` on the local engine, listening and advertised on its own address,
# $SWARM_ADDR (127.0.0.70:2377 by default; refused up front if something holds it), never on
# 0.0.0.0, with its overlay subnets from $SWARM_POOL (10.251.0.0/16) and VXLAN on $SWARM_DATA_PORT
# (47890) rather than Swarm's 10.0.0.0/8 and 4789; the image is passed by ID with --no-resolve-image so nothing contacts a registry. Nothing
# is pulled. Not part of CI. `CASES="create heal"` runs only some groups of cases (create, scale,
# heal, update, failure), `ROUNDS=1 CASES=heal` is a short run.
#
# It cleans up what it made, and only that, also on failure or Ctrl-C: the engine leaves the swarm
# it joined (and drops docker_gwbridge if swarm mode made it), the shoal daemons it started are
# stopped by pid, and the containers of those daemons' nodes (by node id label) are removed —
# never another shoal's containers on the same engine.
set -euo pipefail

cd "$(dirname "$0")/.."
IMAGE_REF=shoal-test/busybox:latest
# Builds the local test image from busybox-static if the engine lacks it (testimage/).
cargo run -q -p shoal-testimage --bin shoal-test-image >&2
IMAGE_ID=$(docker image inspect -f '{{.Id}}' "$IMAGE_REF")
SWARM_ADDR=${SWARM_ADDR:-127.0.0.70:2377}
SWARM_POOL=${SWARM_POOL:-10.251.0.0/16}
SWARM_DATA_PORT=${SWARM_DATA_PORT:-47890}
CASES=${CASES:-create scale heal update failure cli}
CLI_RUNS=${CLI_RUNS:-20}
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
SWARM_JOINED=""
GWBRIDGE_MADE=""

log() { printf '%s\n' "$*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" -v p="${2:-2}" 'BEGIN { printf "%.*f", p, b - a }'; }

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

wants() { [[ " $CASES " == *" $1 "* ]]; }

# The node ids of the shoal daemons this script started (from their data dirs, so also for a
# daemon that is no longer running).
our_node_ids() { find "$WORK" -name node.json -exec jq -r '.node_id // empty' {} + 2>/dev/null | sort -u; }
# Running containers of our shoal nodes (`-a` first: stopped ones too), with more `docker ps`
# filters ("label=K=V", ANDed with the node's).
our_containers() {
    local all=() id filters=() f
    if [[ ${1:-} == -a ]]; then all=(-a); shift; fi
    for f in "$@"; do filters+=(--filter "$f"); done
    for id in $(our_node_ids); do
        docker ps "${all[@]}" -q --no-trunc --filter "label=com.shoal.node.id=$id" "${filters[@]}"
    done
}

cleanup() {
    local status=$?
    set +e
    trap - EXIT INT TERM
    if [[ -n $SWARM_JOINED ]]; then
        docker swarm leave --force >/dev/null 2>&1
        # Swarm mode makes docker_gwbridge and leaves it behind; drop it if it was not there before.
        [[ -n $GWBRIDGE_MADE ]] && docker network rm docker_gwbridge >/dev/null 2>&1
    fi
    for pid in "${DAEMON_PIDS[@]}"; do
        kill "$pid" 2>/dev/null
    done
    for pid in "${DAEMON_PIDS[@]}"; do
        wait "$pid" 2>/dev/null
    done
    local leftovers
    leftovers=$(our_containers -a)
    [[ -n $leftovers ]] && docker rm -f $leftovers >/dev/null 2>&1
    log "cleaned up: swarm mode $(docker info -f '{{.Swarm.LocalNodeState}}' 2>/dev/null), $(wc -w <<<"$leftovers") container(s) of this run's shoal nodes removed"
    [[ -s $RESULTS ]] && cp "$RESULTS" "${RESULTS_OUT:-/tmp/swarm-compare-results.tsv}"
    if ((status == 0)); then
        rm -rf "$WORK"
    else
        log "failed; daemon logs kept in $WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

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

# The container of service $1 that started first (so, after a wait, one that ran healthily).
sw_oldest_container() {
    docker ps -q --no-trunc --filter "label=com.docker.swarm.service.name=$1" |
        xargs docker inspect -f '{{.State.StartedAt}} {{.Id}}' | sort | head -n1 | cut -d' ' -f2
}

# Swarm mode on the engine: its own address, and its overlay subnets and VXLAN port away from
# Swarm's defaults (10.0.0.0/8, 4789): shoal's ingress bridges are 10.0.0.0/16, and other tests may
# share the engine. `swarm_leave` undoes it (and drops docker_gwbridge if swarm mode made it).
swarm_init() {
    docker network inspect docker_gwbridge >/dev/null 2>&1 || GWBRIDGE_MADE=1
    SWARM_JOINED=1
    docker swarm init --advertise-addr "$SWARM_ADDR" --listen-addr "$SWARM_ADDR" \
        --default-addr-pool "$SWARM_POOL" --data-path-port "$SWARM_DATA_PORT" >/dev/null
}
swarm_leave() {
    docker swarm leave --force >/dev/null
    SWARM_JOINED=""
    if [[ -n $GWBRIDGE_MADE ]]; then
        docker network rm docker_gwbridge >/dev/null 2>&1 || true
        GWBRIDGE_MADE=""
    fi
}

bench_swarm() {
    ((ROUNDS > 0)) && { wants create || wants scale || wants heal || wants update; } || return 0
    log "== Docker Swarm (listening on $SWARM_ADDR)"
    swarm_init
    local round n t c
    for round in $(seq "$ROUNDS"); do
        if wants create; then
            for n in 1 10 50; do
                t=$(now); sw_create "cmp$n" "$n"; wait_until sw_running "cmp$n" "$n"
                record swarm "create $n" "$(since "$t")"; sw_rm "cmp$n"
            done
        fi
        if wants scale; then
            sw_create cmps 10; wait_until sw_running cmps 10
            t=$(now); docker service scale --detach cmps=50 >/dev/null 2>&1; wait_until sw_running cmps 50
            record swarm "scale 10→50" "$(since "$t")"; sw_rm cmps
        fi
        if wants heal; then
            sw_create cmph 10; wait_until sw_running cmph 10
            c=$(docker inspect -f '{{.Id}}' "$(sw_one_container cmph)")
            t=$(now); docker kill "$c" >/dev/null; wait_until sw_replaced cmph 10 "$c"
            record swarm "self-heal: killed at start" "$(since "$t")"
            sleep 12
            c=$(sw_oldest_container cmph)
            t=$(now); docker kill "$c" >/dev/null; wait_until sw_replaced cmph 10 "$c"
            record swarm "self-heal: killed after a 12 s healthy run" "$(since "$t")"
            sw_rm cmph
        fi
        if wants update; then
            sw_create cmpu 10 --update-parallelism 2 --update-delay 0s --update-monitor 1s; wait_until sw_running cmpu 10
            t=$(now); docker service update --detach --quiet --env-add V=2 cmpu >/dev/null; wait_until sw_updated cmpu 10
            record swarm "rolling update 10 (par 2)" "$(since "$t")"; sw_rm cmpu
        fi
    done
    swarm_leave
}

# ---------------------------------------------------------------- the docker CLI against both at once
# The real `docker` CLI, once against the engine in swarm mode and once against shoal's Engine API
# socket, alternated run by run so a drift in the machine's speed hits both alike.
bench_cli() {
    wants cli || return 0
    log "== the docker CLI against Docker Swarm ($SWARM_ADDR) and shoal (127.0.0.74) at once"
    swarm_init
    start_daemon c 127.0.0.74
    sctl c swarm init --advertise-addr 127.0.0.74:23771 --listen-addr 127.0.0.74:23771 >/dev/null
    wait_until test -S "$WORK/c/api.sock"
    local -A host=([swarm]="" [shoal]="unix://$WORK/c/api.sock")
    # `docker SYSTEM ARGS…`: the docker CLI against one system.
    dk() {
        local system=$1; shift
        if [[ -n ${host[$system]} ]]; then DOCKER_HOST=${host[$system]} docker "$@"; else env -u DOCKER_HOST docker "$@"; fi
    }
    # Without --detach the CLI follows the service's progress and returns once it converged.
    dk_create() { dk "$1" service create --quiet --no-resolve-image --name "$2" --replicas "$3" \
        --stop-grace-period 1s "$IMAGE_ID" "${CMD[@]}" >/dev/null; }
    dk_gone() { [[ -z $(dk "$1" service ls -q --filter "name=$2") ]]; }
    local system t run
    for system in swarm shoal; do dk_create "$system" cmpl 10; done
    for run in $(seq "$CLI_RUNS"); do
        for system in swarm shoal; do
            t=$(now); dk "$system" service ls >/dev/null; record "$system" "docker service ls" "$(since "$t" 4)"
            t=$(now); dk "$system" node ls >/dev/null; record "$system" "docker node ls" "$(since "$t" 4)"
        done
    done
    for system in swarm shoal; do dk "$system" service rm cmpl >/dev/null; done
    wait_until sw_gone cmpl
    wait_until sh_gone cmpl
    for run in $(seq "$ROUNDS"); do
        for system in swarm shoal; do
            t=$(now); dk_create "$system" cmpc 50; record "$system" "docker service create --replicas 50 (converged)" "$(since "$t")"
            dk "$system" service rm cmpc >/dev/null
            wait_until dk_gone "$system" cmpc
        done
        wait_until sw_gone cmpc
        wait_until sh_gone cmpc
    done
    swarm_leave
    kill "$PID_c" && wait "$PID_c" 2>/dev/null || true
}

# ---------------------------------------------------------------- shoal
start_daemon() { # name ip → sets SOCK_<name>
    local dir=$WORK/$1
    mkdir -p "$dir"
    "$SHOAL" daemon --executor docker --pull never --hostname "$1" --data-dir "$dir/data" --socket "$dir/sock" \
        --api-socket "$dir/api.sock" 2>"$dir/log" &
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
sh_gone() { [[ -z $(our_containers -a "label=com.shoal.service.name=$1") ]]; }
sh_create() { sctl m service create --detach --name "$1" --replicas "$2" --stop-grace-period 1s "${@:3}" \
    "$IMAGE_ID" "${CMD[@]}" >/dev/null; }
sh_rm() { sctl m service rm "$1" >/dev/null && wait_until sh_gone "$1"; }
sh_updated() {
    local rows
    rows=$(sctl m ps_json "$1")
    [[ $(jq -r 'select(.DesiredState == "Running" and (.CurrentState | startswith("Running"))) | .ID' <<<"$rows" | wc -l) -eq $2 &&
        $(jq -r 'select(.DesiredState == "Shutdown") | .ID' <<<"$rows" | wc -l) -ge $2 ]]
}
sh_replaced() { # as `replaced`, counting only this run's nodes' containers
    [[ $(docker inspect -f '{{.State.Running}}' "$3" 2>/dev/null || echo removed) != true ]] &&
        [[ $(our_containers "label=com.shoal.service.name=$1" | wc -l) -eq $2 ]] && sh_running "$1" "$2"
}
sh_oldest_container() {
    our_containers "label=com.shoal.service.name=$1" |
        xargs docker inspect -f '{{.State.StartedAt}} {{.Id}}' | sort | head -n1 | cut -d' ' -f2
}

bench_shoal() {
    log "== shoal ($SHOAL)"
    start_daemon m 127.0.0.71
    sctl m swarm init --advertise-addr 127.0.0.71:23771 --listen-addr 127.0.0.71:23771 >/dev/null
    local round n t c
    for round in $(seq "$ROUNDS"); do
        if wants create; then
            for n in 1 10 50; do
                t=$(now); sh_create "cmp$n" "$n"; wait_until sh_running "cmp$n" "$n"
                record shoal "create $n" "$(since "$t")"; sh_rm "cmp$n"
            done
        fi
        if wants scale; then
            sh_create cmps 10; wait_until sh_running cmps 10
            t=$(now); sctl m service scale --detach cmps=50 >/dev/null; wait_until sh_running cmps 50
            record shoal "scale 10→50" "$(since "$t")"; sh_rm cmps
        fi

        if wants heal; then
            sh_create cmph 10; wait_until sh_running cmph 10
            c=$(our_containers "label=com.shoal.service.name=cmph" | head -n1)
            t=$(now); docker kill "$c" >/dev/null; wait_until sh_replaced cmph 10 "$c"
            record shoal "self-heal: killed at start" "$(since "$t")"
            sleep 12
            c=$(sh_oldest_container cmph)
            t=$(now); docker kill "$c" >/dev/null; wait_until sh_replaced cmph 10 "$c"
            record shoal "self-heal: killed after a 12 s healthy run" "$(since "$t")"
            sh_rm cmph
            # shoal's back-off: a task that ran healthily (≥ 10 s) is restarted at once.
            sh_create cmpb 10 --restart-backoff exponential; wait_until sh_running cmpb 10
            sleep 12
            c=$(sh_oldest_container cmpb)
            t=$(now); docker kill "$c" >/dev/null; wait_until sh_replaced cmpb 10 "$c"
            record shoal "self-heal: killed after a 12 s healthy run, --restart-backoff exponential" "$(since "$t")"
            sh_rm cmpb
        fi

        if wants update; then
            sh_create cmpu 10 --update-parallelism 2 --update-delay 0s --update-monitor 1s; wait_until sh_running cmpu 10
            t=$(now); sctl m service update --detach --env-add V=2 cmpu >/dev/null; wait_until sh_updated cmpu 10
            record shoal "rolling update 10 (par 2)" "$(since "$t")"; sh_rm cmpu
        fi
    done
    wants failure || return 0

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
    ids=$(our_containers -a "label=com.shoal.service.name=$1")
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
# Swarm gets its own address: refuse if anything listens there already.
if (exec 3<>"/dev/tcp/${SWARM_ADDR%:*}/${SWARM_ADDR##*:}") 2>/dev/null; then
    log "something already listens on $SWARM_ADDR; choose another with SWARM_ADDR=IP:PORT"
    exit 1
fi

: >"$RESULTS"
bench_cli
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
        t = (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
        return sprintf(t < 1 ? "%.4f" : "%.2f", t)
    }
    END {
        printf "| case | Docker Swarm (s) | shoal (s) | shoal / Swarm | runs |\n|---|---|---|---|---|\n"
        for (i = 1; i <= k; i++) {
            key = order[i]; a = median("swarm", key); b = median("shoal", key)
            r = (a != "n/a" && b != "n/a" && a + 0 > 0) ? sprintf("%.2f", b / a) : "n/a"
            printf "| %s | %s | %s | %s | %d/%d |\n", key, a, b, r, n["swarm", key], n["shoal", key]
        }
    }' "$RESULTS"
log ""
log "all runs:"
cat "$RESULTS" >&2
