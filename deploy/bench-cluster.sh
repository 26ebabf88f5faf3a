#!/bin/sh
# Runs one `persona bench` against a fresh cluster on loopback and stops
# the cluster after it:
#
#   deploy/bench-cluster.sh propagation --rooms 1000 --renames 5 --burst 100
#   CLUSTER_NODES=1 deploy/bench-cluster.sh profile --phases writes
#
# local-cluster.sh starts CLUSTER_NODES nodes (3) in a new temporary
# directory (removed after; CLUSTER_KEEP=1 keeps it). The bench gets the
# cluster's config and every node's metrics listener (--config,
# --metrics), and `profile` every node's client URL (--url); flags given
# after the bench's name come later, so they win. The load average is
# shown before and after: other work on the machine moves the figures.
set -eu

bin=${PERSONA_BIN:-bin/persona}
nodes=${CLUSTER_NODES:-3}
[ $# -ge 1 ] || { echo "usage: $0 profile|propagation [bench flags]" >&2; exit 2; }
kind=$1
shift

dir=$(mktemp -d "${TMPDIR:-/tmp}/persona-bench-cluster.XXXXXX")
metrics="" urls=""
i=0
while [ "$i" -lt "$nodes" ]; do
	metrics="$metrics${metrics:+,}127.0.0.1:$((9108 + 10 * i))"
	urls="$urls${urls:+,}http://127.0.0.1:$((8008 + 10 * i))"
	i=$((i + 1))
done

CLUSTER_DIR="$dir" CLUSTER_NODES="$nodes" PERSONA_BIN="$bin" "$(dirname "$0")/local-cluster.sh" >"$dir/cluster.out" 2>&1 &
cluster=$!
done_() {
	kill -TERM "$cluster" 2>/dev/null || true
	wait "$cluster" 2>/dev/null || true
	if [ "${CLUSTER_KEEP:-}" = 1 ]; then echo "cluster data kept in $dir"; else rm -rf "$dir"; fi
}
trap 'done_; exit 1' INT TERM

until grep -q '^Try it' "$dir/cluster.out" 2>/dev/null; do
	if ! kill -0 "$cluster" 2>/dev/null; then
		cat "$dir/cluster.out" >&2
		CLUSTER_KEEP=1 done_
		exit 1
	fi
	sleep 0.2
done
echo "$nodes node(s) ready; load average: $(cut -d' ' -f1-3 /proc/loadavg)"

set -- --config "$dir/persona.yaml" --metrics "$metrics" "$@"
[ "$kind" = profile ] && set -- --url "$urls" "$@"
status=0
"$bin" bench "$kind" "$@" || status=$?
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
done_
exit "$status"
