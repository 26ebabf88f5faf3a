package cluster

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/memberlist"
	"pgregory.net/rapid"
)

// TestMetaRoundTrip encodes random metadata and reads it back unchanged,
// for any number of partitions up to 1024.
func TestMetaRoundTrip(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		partitions := rapid.IntRange(1, 1024).Draw(t, "partitions")
		in := Meta{
			ActorAddr: rapid.StringMatching(`[a-z0-9.:\[\]]{0,60}`).Draw(t, "actor"),
			RaftAddr:  rapid.StringMatching(`[a-z0-9.:\[\]]{0,60}`).Draw(t, "raft"),
			APIAddr:   rapid.StringMatching(`[a-z0-9.:\[\]]{0,60}`).Draw(t, "api"),
			Ready:     rapid.Bool().Draw(t, "ready"),
			Draining:  rapid.Bool().Draw(t, "draining"),
		}
		for p := range partitions {
			switch rapid.IntRange(0, 3).Draw(t, "role") {
			case 0:
				in.Led = append(in.Led, p)
			case 1:
				in.Followed = append(in.Followed, p)
			}
		}
		leaving := rapid.Bool().Draw(t, "leaving")
		b, err := encodeMeta(in, partitions, leaving)
		if err != nil {
			t.Fatalf("encode %+v: %v", in, err)
		}
		if len(b) > memberlist.MetaMaxSize {
			t.Fatalf("%d bytes, over memberlist's %d", len(b), memberlist.MetaMaxSize)
		}
		out, err := decodeMeta(b)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if out.partitions != partitions || out.leaving != leaving || out.ActorAddr != in.ActorAddr || out.RaftAddr != in.RaftAddr ||
			out.APIAddr != in.APIAddr || out.Ready != in.Ready || out.Draining != in.Draining || !slices.Equal(out.Led, in.Led) || !slices.Equal(out.Followed, in.Followed) {
			t.Fatalf("decode(encode(%+v, %d, %v)) = %+v", in, partitions, leaving, out)
		}
	})
}

// TestMetaDefaultSize: the metadata of a node of the default 64
// partitions, leading a third and following the rest, takes under 64 bytes.
func TestMetaDefaultSize(t *testing.T) {
	t.Parallel()
	var m Meta
	m.ActorAddr, m.Ready = "198.18.0.1:8090", true
	for p := range 64 {
		if p%3 == 0 {
			m.Led = append(m.Led, p)
		} else {
			m.Followed = append(m.Followed, p)
		}
	}
	b, err := encodeMeta(m, 64, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("metadata of 64 partitions: %d bytes", len(b))
	if len(b) >= 64 {
		t.Fatalf("%d bytes", len(b))
	}
}

// TestMetaOtherVersions reads metadata of a later version, which appends
// fields after this one's, of version 2, which has no API address, and of
// version 1, which has no raft address either.
func TestMetaOtherVersions(t *testing.T) {
	t.Parallel()
	in := Meta{ActorAddr: "10.0.0.1:8090", RaftAddr: "10.0.0.1:8190", APIAddr: "10.0.0.1:8008", Ready: true, Led: []int{1, 5}, Followed: []int{0, 7}}
	b, err := encodeMeta(in, 8, true)
	if err != nil {
		t.Fatal(err)
	}
	later := append([]byte{metaVersion + 1}, b[1:]...)
	later = append(later, 0xde, 0xad, 0xbe, 0xef)
	out, err := decodeMeta(later)
	if err != nil || out.partitions != 8 || !out.leaving || out.ActorAddr != in.ActorAddr || out.RaftAddr != in.RaftAddr || out.APIAddr != in.APIAddr || !out.Ready ||
		!slices.Equal(out.Led, in.Led) || !slices.Equal(out.Followed, in.Followed) {
		t.Fatalf("a later version with more fields: %+v, %v", out, err)
	}
	v2 := append([]byte{2}, b[1:len(b)-1-len(in.APIAddr)]...)
	out, err = decodeMeta(v2)
	if err != nil || out.RaftAddr != in.RaftAddr || out.APIAddr != "" || !slices.Equal(out.Followed, in.Followed) {
		t.Fatalf("version 2: %+v, %v", out, err)
	}
	v1 := append([]byte{1}, v2[1:len(v2)-1-len(in.RaftAddr)]...)
	out, err = decodeMeta(v1)
	if err != nil || out.ActorAddr != in.ActorAddr || out.RaftAddr != "" || !slices.Equal(out.Led, in.Led) || !slices.Equal(out.Followed, in.Followed) {
		t.Fatalf("version 1: %+v, %v", out, err)
	}
}

func TestMetaErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name       string
		m          Meta
		partitions int
		want       string
	}{
		{"no partitions", Meta{}, 0, "0 partitions"},
		{"led out of range", Meta{Led: []int{64}}, 64, "led partitions: partition 64 out of range"},
		{"followed negative", Meta{Followed: []int{-1}}, 64, "followed partitions: partition -1"},
		{"led and followed", Meta{Led: []int{3, 9}, Followed: []int{9}}, 64, "partition 9 is both led and followed"},
		{"too big", Meta{ActorAddr: strings.Repeat("a", 200)}, 4096, "exceeds memberlist's 512"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := encodeMeta(tt.m, tt.partitions, false)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("encodeMeta(%+v, %d) = %v, want an error with %q", tt.m, tt.partitions, err, tt.want)
			}
		})
	}
	good, err := encodeMeta(Meta{ActorAddr: "a:1", Led: []int{0}}, 16, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range [][]byte{nil, {1}, {0, 0, 16, 0, 0, 0, 0, 0}, good[:len(good)-1], {1, 0, 0x80}, {1, 0, 16, 50, 'a'}} {
		if _, err := decodeMeta(b); !errors.Is(err, errMeta) {
			t.Errorf("decodeMeta(%v) = %v, want errMeta", b, err)
		}
	}
}

func TestParseLogLine(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ line, level, msg string }{
		{"[DEBUG] memberlist: Stream connection from=127.0.0.1:1", "DEBUG", "Stream connection from=127.0.0.1:1"},
		{"[INFO] memberlist: Suspect b has failed, no acks received", "INFO", "Suspect b has failed, no acks received"},
		{"[WARN] memberlist: Refuting a suspect message (from: a)", "WARN", "Refuting a suspect message (from: a)"},
		{"[ERR] memberlist: Failed to send", "ERROR", "Failed to send"},
		{"no level", "INFO", "no level"},
	} {
		level, msg := parseLogLine(tt.line)
		if level.String() != tt.level || msg != tt.msg {
			t.Errorf("parseLogLine(%q) = %s, %q; want %s, %q", tt.line, level, msg, tt.level, tt.msg)
		}
	}
}
