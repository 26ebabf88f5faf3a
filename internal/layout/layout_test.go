package layout

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// allowed lists, for each package, the persona packages it may import:
// the graph ARCHITECTURE.md draws.
var allowed = map[string][]string{
	// cmd/persona's benches place users and rooms on the nodes they want:
	// a partition by host.PartitionOf, its preferred leader by cluster.Replicas.
	"persona/cmd/persona":       {"api", "config", "internal/cputime", "internal/mxid", "internal/node", "host", "cluster"},
	"persona/internal/node":     {"api", "actors", "media", "federation", "federation/outbox", "federation/profiles", "federation/rooms", "host", "storage", "metrics", "config", "cluster", "cluster/raft", "cluster/replicas"},
	"persona/internal/testnode": {"internal/node", "config"},
	"persona/api":               {"actors", "media", "wire", "metrics", "config", "internal/mxid", "cluster"},
	"persona/media":             {"storage"},
	"persona/federation":        {"storage", "config", "metrics", "internal/mxid", "wire", "host"},
	"persona/federation/rooms":  {"actors", "federation", "federation/profiles", "wire", "storage", "metrics", "config", "internal/mxid"},
	"persona/actors":            {"wire", "host", "storage", "metrics", "config", "internal/mxid", "internal/pdu"},
	"persona/host":              {"metrics", "wire"},
	"persona/federation/outbox": {"host", "storage", "wire", "metrics"},
	"persona/wire":              {},
	"persona/storage":           {},
	"persona/metrics":           {},
	"persona/config":            {"internal/mxid"},
	"persona/internal/mxid":     {},
	"persona/internal/cputime":  {},
	"persona/internal/pdu":      {},
	"persona/internal/layout":   {},

	// The cluster membership (memberlist).
	"persona/cluster": {"metrics"},
	// The replication driver: etcd raft over groups, no persona package.
	"persona/cluster/raft": {},
	// The controller keeping each partition's group where placement wants it.
	"persona/cluster/replicas": {"cluster", "cluster/raft", "metrics"},

	// The cache of other servers' users' profiles.
	"persona/federation/profiles": {"storage", "metrics", "internal/mxid"},

	// Test support: histories of profile operations, checked for
	// linearizability (porcupine).
	"persona/internal/lincheck": {},

	// Test support: hosts of their own (network namespaces) for child processes.
	"persona/internal/netns": {},

	// Test support: a test binary's check that no goroutine outlives its tests.
	"persona/internal/leakcheck": {},

	// The operators' dashboard and Prometheus rules; only its tests have code.
	"persona/deploy": {},

	// Test support: a real Dendrite peer, built by its own command.
	"persona/internal/dendrite":            {},
	"persona/internal/dendrite/cmd/ensure": {"internal/dendrite"},
}

// TestImportsRunOneWay fails when a package imports a persona package
// outside its list, or when a package is missing from the list.
func TestImportsRunOneWay(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, "persona/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for line := range strings.Lines(string(out)) {
		fields := strings.Fields(line)
		pkg, imports := fields[0], fields[1:]
		may, ok := allowed[pkg]
		if !ok {
			t.Errorf("%s is not in the layout: add it to allowed and to ARCHITECTURE.md", pkg)
			continue
		}
		for _, imp := range imports {
			dep, ok := strings.CutPrefix(imp, "persona/")
			if ok && !slices.Contains(may, dep) {
				t.Errorf("%s imports %s: the layout allows %v", pkg, imp, may)
			}
		}
	}
}
