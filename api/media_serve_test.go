package api

import (
	"strings"
	"testing"
)

// TestMediaHelpers: stored content types map to the served ones, and a
// file name cannot break the Content-Disposition header.
func TestMediaHelpers(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"image/PNG": "image/png", "text/plain; charset=UTF-8": "text/plain; charset=UTF-8",
		"image/png; foo=bar": "image/png", "text/html": "application/octet-stream",
		"image/svg+xml": "application/octet-stream", "garbage;;": "application/octet-stream",
	} {
		if got, _ := safeContentType(in); got != want {
			t.Errorf("safeContentType(%q) = %q, want %q", in, got, want)
		}
	}
	if got := contentDisposition(false, "a\"b\r\n.txt"); strings.ContainsAny(got, "\r\n") {
		t.Errorf("disposition %q", got)
	}
}
