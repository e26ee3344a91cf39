#!/usr/bin/env bash
# A 3-node Shoal cluster on one machine: three network namespaces ("hosts")
# joined by a bridge in a namespace of its own (the "switch"), one shoald in
# each, node-1 the manager, node-2 and node-3 workers, and a demo service.
#
#   sudo tests/three-nodes.sh up      # build, start, join, create web (6 x shoal/echo on 8080)
#   sudo tests/three-nodes.sh curl    # 6 curls from every node (round-robin across all nodes)
#   sudo tests/three-nodes.sh shoal node ls   # run the CLI against node-1
#   sudo tests/three-nodes.sh down    # stop everything, delete namespaces and data
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release}
RUN=${RUN:-/tmp/shoal-3n}
SW=shoal3-sw

ip_of() { echo "192.168.200.1$1"; }
sock() { echo "unix://$RUN/node-$1/shoal.sock"; }

up() {
  [ -x "$BIN/shoald" ] || cargo build --release --bins
  ip netns add $SW
  ip -n $SW link add br0 type bridge
  ip -n $SW link set br0 up
  for n in 1 2 3; do
    ip netns add shoal3-n$n
    ip -n shoal3-n$n link set lo up
    ip -n $SW link add v$n type veth peer name eth0 netns shoal3-n$n
    ip -n $SW link set v$n master br0 up
    ip -n shoal3-n$n addr add "$(ip_of $n)/24" dev eth0
    ip -n shoal3-n$n link set eth0 up
    mkdir -p "$RUN/node-$n"
    ip netns exec shoal3-n$n "$BIN/shoald" --data-root "$RUN/node-$n/data" --host "$(sock $n)" \
      --hostname node-$n --advertise-addr "$(ip_of $n)" --listen-addr "$(ip_of $n):2377" \
      --metrics-addr 127.0.0.1:9323 >"$RUN/node-$n/shoald.log" 2>&1 &
    echo $! >"$RUN/node-$n/pid"
  done
  for n in 1 2 3; do
    for _ in $(seq 100); do "$BIN/shoal" -H "$(sock $n)" node ls >/dev/null 2>&1 && break
      "$BIN/shoal" -H "$(sock $n)" node ls 2>&1 | grep -q "not a swarm manager" && break; sleep 0.1; done
  done
  "$BIN/shoal" -H "$(sock 1)" swarm init --advertise-addr "$(ip_of 1)"
  token=$("$BIN/shoal" -H "$(sock 1)" swarm join-token -q worker)
  for n in 2 3; do
    "$BIN/shoal" -H "$(sock $n)" swarm join --token "$token" --advertise-addr "$(ip_of $n)" "$(ip_of 1):2377"
  done
  "$BIN/shoal" -H "$(sock 1)" service create --name web --replicas 6 -p 8080:80 shoal/echo
  "$BIN/shoal" -H "$(sock 1)" node ls
  "$BIN/shoal" -H "$(sock 1)" service ps web
}

curl_all() {
  for n in 1 2 3; do
    echo "--- from node-$n"
    for _ in $(seq 6); do ip netns exec shoal3-n$n curl -s 127.0.0.1:8080; done
  done
}

down() {
  for n in 1 2 3; do
    [ -f "$RUN/node-$n/pid" ] && kill "$(cat "$RUN/node-$n/pid")" 2>/dev/null || true
  done
  sleep 2
  for n in 1 2 3; do ip netns del shoal3-n$n 2>/dev/null || true; done
  ip netns del $SW 2>/dev/null || true
  rm -rf "$RUN"
}

case "${1:-}" in
  up) up ;;
  curl) curl_all ;;
  down) down ;;
  shoal) shift; "$BIN/shoal" -H "$(sock 1)" "$@" ;;
  *) sed -n 2,11p "$0"; exit 2 ;;
esac
