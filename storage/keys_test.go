package storage

import (
	"bytes"
	"testing"
)

func TestJoinExtendsAKey(t *testing.T) {
	if got, want := Join(Key("p", "00", "r", "!a:b"), "ev", Uint64(7)), Key("p", "00", "r", "!a:b", "ev", Uint64(7)); !bytes.Equal(got, want) {
		t.Fatalf("Join = %q, want %q", got, want)
	}
	prefix := Key("p")
	a, b := Join(prefix, "x"), Join(prefix, "y")
	if string(a) != string(Key("p", "x")) || string(b) != string(Key("p", "y")) {
		t.Fatalf("Join shares memory between keys: %q %q", a, b)
	}
}
