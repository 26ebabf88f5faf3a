package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/trace"
	"strconv"
	"strings"
	"testing"

	"persona/storage"
)

// TestTraceReport: a trace of real commits, each inside a profile write's
// region, reports those writes, the commit log's syncs the committer made
// for them, and the GC's marking. Not parallel: a process runs one trace
// at a time.
func TestTraceReport(t *testing.T) {
	dir := t.TempDir()
	s, err := storage.Open(filepath.Join(dir, "db"), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var buf bytes.Buffer
	if err := trace.Start(&buf); err != nil {
		t.Skipf("tracing unavailable: %v", err) // another trace is running
	}
	for i := range 20 {
		trace.WithRegion(context.Background(), putRegion, func() {
			var b storage.Batch
			b.Set(storage.Key("k", fmt.Sprint(i)), []byte("v"))
			if err := s.CommitSync(&b); err != nil {
				t.Error(err)
			}
		})
	}
	runtime.GC() // one whole mark phase in the trace
	trace.Stop()
	path := filepath.Join(dir, "t.trace")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := traceReport(path, &out, 5); err != nil {
		t.Fatal(err)
	}
	report := out.String()
	t.Log(report)
	if !strings.Contains(report, "the 5 slowest of 20 profile writes") {
		t.Fatalf("report does not count the 20 writes:\n%s", report)
	}
	m := regexp.MustCompile(`commit log syncs: (\d+),`).FindStringSubmatch(report)
	if m == nil {
		t.Fatalf("report has no commit log syncs:\n%s", report)
	}
	if n, _ := strconv.Atoi(m[1]); n < 20 {
		t.Fatalf("%d commit log syncs for 20 synchronous commits:\n%s", n, report)
	}
	if m := regexp.MustCompile(`GC marking ([0-9.]+) ms`).FindStringSubmatch(report); m == nil || m[1] == "0" {
		t.Fatalf("report misses the GC's mark phase:\n%s", report)
	}
	if strings.Count(report, "fdatasync") < 5 {
		t.Fatalf("the slowest writes do not show the committer's syncs:\n%s", report)
	}
}
