package main

import (
	"io"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestBenchAgainstACluster runs the benches at tiny sizes against three
// `persona serve` processes: propagation through n2 with every room on a
// partition n1 or n3 leads, then durable writes through all three nodes,
// each with the CPU of the three.
func TestBenchAgainstACluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nodes")
	}
	procs, _ := newClusterOfProcesses(t, 3)
	startReady(t, procs, 20*time.Second)
	n1, n2, n3 := procs[0], procs[1], procs[2]
	metrics := strings.Join([]string{n2.metrics, n1.metrics, n3.metrics}, ",")

	var out strings.Builder
	args := []string{"--config", n2.file, "--url", n2.base(), "--metrics", metrics, "--placement", "remote", "--rooms", "3", "--renames", "2", "--burst", "3"}
	if err := benchPropagation(args, &out, io.Discard); err != nil {
		t.Fatalf("bench propagation: %v\n%s", err, out.String())
	}
	for _, want := range []string{
		"the user's partition led by n2, its rooms' by the others",
		"propagation to 3 rooms: p50",
		"less idle: ",
		"verified the last name in 3 rooms' state",
		"node RSS (" + n3.metrics + ")",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("bench propagation output lacks %q:\n%s", want, out.String())
		}
	}

	out.Reset()
	args = []string{"--config", n1.file, "--url", n1.base() + "," + n2.base() + "," + n3.base(), "--metrics", metrics,
		"--users", "6", "--concurrency", "3", "--duration", "1s", "--phases", "writes"}
	if err := benchProfile(args, &out, io.Discard); err != nil {
		t.Fatalf("bench profile: %v\n%s", err, out.String())
	}
	if !regexp.MustCompile(`(?m)^writes .*\([1-9]\d* ok, 0 errors\)\n +nodes' CPU: .* \(.* \+ .* \+ .*\); less idle: -?\d+\.\d\d s`).MatchString(out.String()) {
		t.Errorf("bench profile output:\n%s", out.String())
	}
}
