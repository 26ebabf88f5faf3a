#!/bin/sh
# Starts a cluster of persona nodes on loopback for a person to try, in the
# foreground; Ctrl-C (or SIGTERM) stops every node it started and waits for
# them. `make cluster` runs it.
#
# Every node reads one config, DIR/persona.yaml (written on the first run,
# with a registration secret of its own), and takes its addresses from
# PERSONA_* variables: node i serves clients on 127.0.0.1:8008+10i, metrics
# on 9108+10i, federation on 8448+10i, gossips on 7946+i and reaches actors
# on 8090+i, replicates on 8190+i, with its data in DIR/node<i>. The nodes are one server: one
# server name and one signing key file (DIR/signing.key).
set -eu

bin=${PERSONA_BIN:-bin/persona}
dir=${CLUSTER_DIR:-cluster-data}
nodes=${CLUSTER_NODES:-3}

mkdir -p "$dir"
cfg="$dir/persona.yaml"
if [ ! -f "$cfg" ]; then
	secret=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
	"$bin" generate-config | sed "s/^  shared_secret: \"\"/  shared_secret: \"$secret\"/" >"$cfg"
	echo "wrote $cfg"
fi

join=""
i=0
while [ "$i" -lt "$nodes" ]; do
	join="$join${join:+,}127.0.0.1:$((7946 + i))"
	i=$((i + 1))
done

pids=""
stop() {
	trap - INT TERM
	echo "stopping:$pids"
	# shellcheck disable=SC2086
	kill -TERM $pids 2>/dev/null || true
	for pid in $pids; do wait "$pid" 2>/dev/null || true; done
	exit 0
}
trap stop INT TERM

i=0
while [ "$i" -lt "$nodes" ]; do
	PERSONA_DATA_DIR="$dir/node$i" \
	PERSONA_LISTEN_CLIENT="127.0.0.1:$((8008 + 10 * i))" \
	PERSONA_LISTEN_METRICS="127.0.0.1:$((9108 + 10 * i))" \
	PERSONA_LISTEN_FEDERATION="127.0.0.1:$((8448 + 10 * i))" \
	PERSONA_FEDERATION_SIGNING_KEY_FILE="$dir/signing.key" \
	PERSONA_CLUSTER_ENABLED=true \
	PERSONA_CLUSTER_NODE_NAME="node$i" \
	PERSONA_CLUSTER_BIND="127.0.0.1:$((7946 + i))" \
	PERSONA_CLUSTER_ACTOR_BIND="127.0.0.1:$((8090 + i))" \
	PERSONA_CLUSTER_RAFT_BIND="127.0.0.1:$((8190 + i))" \
	PERSONA_CLUSTER_JOIN="$join" \
		"$bin" serve --config "$cfg" >"$dir/node$i.log" 2>&1 &
	pids="$pids $!"
	echo "node$i: pid $!, client http://127.0.0.1:$((8008 + 10 * i)), metrics http://127.0.0.1:$((9108 + 10 * i))/metrics, log $dir/node$i.log"
	i=$((i + 1))
done

# Wait until node0 lists every node alive and ready (each partition has a
# leader that caught up), then show the members as node0 sees them.
tries=0
until [ "$("$bin" cluster members --config "$cfg" 2>/dev/null | grep -cE ' alive +yes ')" -ge "$nodes" ]; do
	tries=$((tries + 1))
	if [ "$tries" -gt 60 ]; then
		echo "the nodes were not all ready within 30 s; see the logs in $dir" >&2
		stop
	fi
	for pid in $pids; do
		kill -0 "$pid" 2>/dev/null || { echo "node with pid $pid exited; see the logs in $dir" >&2; stop; }
	done
	sleep 0.5
done
"$bin" cluster members --config "$cfg"
cat <<MSG

Try it (in another terminal):
  $bin user create alice --password alice-pw --config $cfg
  $bin cluster members --config $cfg --url http://127.0.0.1:8018
Ctrl-C stops the cluster; its data stays in $dir (remove it to start afresh).
MSG
for pid in $pids; do wait "$pid" || true; done
