package pdu

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/matrix-org/gomatrixserverlib"
)

// FuzzCanonical checks Canonical against gomatrixserverlib's canonical
// JSON (with room version 10's checks on numbers) on arbitrary bytes: what
// Canonical accepts the library accepts and writes the same, what the
// library refuses Canonical refuses, and whatever only Canonical refuses
// breaks a rule stricter checks find without Canonical's help.
func FuzzCanonical(f *testing.F) {
	g := newGen(*seed)
	for range 64 {
		f.Add(g.write(nil, g.object(3, g.pick(6))))
		text, _ := g.flawed(g.object(2, g.pick(4)))
		f.Add(text)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := Canonical(in)
		want, glibErr := gomatrixserverlib.EnforcedCanonicalJSON(in, gomatrixserverlib.RoomVersionV10)
		switch {
		case err == nil && glibErr != nil:
			t.Fatalf("Canonical accepts %q, gomatrixserverlib refuses it: %v", in, glibErr)
		case err == nil && !bytes.Equal(got, want):
			t.Fatalf("Canonical(%q)\n = %q\n gomatrixserverlib %q", in, got, want)
		case err == nil:
			again, err := Canonical(got)
			if err != nil || !bytes.Equal(again, got) {
				t.Fatalf("Canonical of its own %q: %q, %v", got, again, err)
			}
		case glibErr == nil:
			if why := stricter(in); why == "" {
				t.Fatalf("Canonical refuses %q (%v), gomatrixserverlib gives %q, and no stricter rule refuses it", in, err, want)
			}
		}
	})
}

// integerRE matches the integers canonical JSON writes.
var integerRE = regexp.MustCompile(`^-?(0|[1-9][0-9]*)$`)

// stricter returns which rule of canonical JSON that gomatrixserverlib
// does not enforce in refuses, "" for none: found with encoding/json and
// a scan for surrogates, not with Canonical's parser.
func stricter(in []byte) string {
	switch {
	case !utf8.Valid(in):
		return "not UTF-8"
	case !json.Valid(in):
		return "not JSON"
	case bytes.TrimLeft(in, " \t\r\n")[0] != '{':
		return "not an object"
	case hasLoneSurrogate(in):
		return "a lone surrogate"
	}
	dec := json.NewDecoder(bytes.NewReader(in))
	dec.UseNumber()
	type frame struct {
		obj     bool
		keys    map[string]bool
		wantKey bool
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return ""
		}
		if err != nil {
			return "not JSON"
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.obj && top.wantKey {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				if len(stack) > 0 && stack[len(stack)-1].obj {
					stack[len(stack)-1].wantKey = true
				}
				continue
			}
			key := tok.(string)
			if strings.ContainsAny(key, "\"\\") || strings.ContainsFunc(key, func(r rune) bool { return r < 0x20 }) {
				return "a key needing an escape"
			}
			if top.keys[key] {
				return "a duplicate key"
			}
			top.keys[key] = true
			top.wantKey = false
			continue
		}
		switch tok := tok.(type) {
		case json.Delim:
			switch tok {
			case '{', '[':
				stack = append(stack, &frame{obj: tok == '{', keys: map[string]bool{}, wantKey: tok == '{'})
				if len(stack) > maxNesting {
					return "nested too deep"
				}
				continue
			default:
				stack = stack[:len(stack)-1]
			}
		case json.Number:
			n, err := strconv.ParseInt(string(tok), 10, 64)
			if !integerRE.MatchString(string(tok)) || tok == "-0" || err != nil || n > maxInt || n < -maxInt {
				return "a number that is not an integer within ±(2^53-1)"
			}
		}
		if len(stack) > 0 && stack[len(stack)-1].obj {
			stack[len(stack)-1].wantKey = true
		}
	}
}

// hasLoneSurrogate reports whether a string in the JSON text in holds a
// \u escape of a surrogate that is not half of a pair.
func hasLoneSurrogate(in []byte) bool {
	hex := func(i int) rune {
		if i+4 > len(in) {
			return -1
		}
		n, err := strconv.ParseUint(string(in[i:i+4]), 16, 16)
		if err != nil {
			return -1
		}
		return rune(n)
	}
	inString := false
	for i := 0; i < len(in); i++ {
		switch c := in[i]; {
		case c == '"':
			inString = !inString
		case c == '\\' && inString && i+1 < len(in) && in[i+1] == 'u':
			r := hex(i + 2)
			switch {
			case r >= 0xdc00 && r <= 0xdfff:
				return true
			case r >= 0xd800 && r <= 0xdbff:
				if i+6 > len(in) || !bytes.HasPrefix(in[i+6:], []byte(`\u`)) {
					return true
				}
				if low := hex(i + 8); low < 0xdc00 || low > 0xdfff {
					return true
				}
				i += 11
			default:
				i += 5
			}
		case c == '\\' && inString:
			i++
		}
	}
	return false
}

// TestCanonicalRefusesWhatTheLibraryRefuses draws contents with a flaw and
// checks that Canonical refuses each, and that gomatrixserverlib's
// canonical JSON refuses those it refuses for room version 10.
func TestCanonicalRefusesWhatTheLibraryRefuses(t *testing.T) {
	t.Parallel()
	t.Logf("seed %d (-pdu.seed)", *seed)
	g := newGen(*seed)
	seen := map[string]int{}
	for range 2000 {
		text, f := g.flawed(g.object(3, g.pick(5)))
		seen[f.name]++
		if _, err := Canonical(text); err == nil {
			t.Fatalf("Canonical accepts %q, which has a %s", text, f.name)
		}
		if why := stricter(text); why == "" {
			t.Fatalf("no stricter rule refuses %q, which has a %s", text, f.name)
		}
		_, glibErr := gomatrixserverlib.EnforcedCanonicalJSON(text, gomatrixserverlib.RoomVersionV10)
		if f.glibRefusesFrom == 6 && glibErr == nil {
			t.Fatalf("gomatrixserverlib accepts %q, which has a %s", text, f.name)
		}
	}
	t.Logf("flaws drawn: %v", seen)
}
