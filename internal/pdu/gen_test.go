package pdu

import (
	"encoding/base64"
	"flag"
	"fmt"
	"math/rand"
	"strconv"
	"strings"
	"unicode/utf16"
)

var seed = flag.Int64("pdu.seed", 1, "seed of the random events and contents the tests draw")

// node is a JSON value drawn by gen: an object (keys and vals), an array
// (items), a string, an integer, a literal or raw text (a flaw).
type node struct {
	kind  nodeKind
	keys  []string
	vals  []*node
	items []*node
	s     string
	n     int64
	raw   string
}

type nodeKind int

const (
	kObject nodeKind = iota
	kArray
	kString
	kInt
	kRaw
)

// flaw is something wrong gen put into a content on purpose.
type flaw struct {
	name string
	// glibRefusesFrom is the first room version whose EventBuilder.Build
	// refuses the flaw (0: it accepts it in every version, Canonical being
	// stricter than gomatrixserverlib there).
	glibRefusesFrom int
}

// gen draws random JSON and events from one seeded source.
type gen struct{ r *rand.Rand }

func newGen(s int64) *gen { return &gen{r: rand.New(rand.NewSource(s))} }

func (g *gen) pick(n int) int { return g.r.Intn(n) }

func (g *gen) chance(p float64) bool { return g.r.Float64() < p }

// runes holds the characters strings are drawn from: plain ASCII, the ones
// encoding/json escapes and canonical JSON does not (<, >, &, U+2028,
// U+2029), the ones both escape, and multi-byte and astral ones.
var runes = []rune{
	'a', 'b', 'z', 'A', 'Z', '0', '9', ' ', '.', ':', '@', '!', '$', '#', '/', '~', '_', '-',
	'<', '>', '&', 0x2028, 0x2029, 0x7f, 0x80, 0xa0, 0xe9, 0xff, 0x100, 0x7ff, 0x800,
	0xfeff, 0xfffd, 0xffff, 0x4e2d, 0x1f600, 0x10000, 0x10ffff,
	'"', '\\', 0, 1, '\b', '\t', '\n', 0x0b, '\f', '\r', 0x1f,
}

// firstEscaped is the index in runes of the first character a key must
// not hold.
const firstEscaped = 38

// text draws a string of up to n characters; keys hold no character
// that needs an escape.
func (g *gen) text(n int, key bool) string {
	pool := runes
	if key {
		pool = runes[:firstEscaped]
	}
	var sb strings.Builder
	for range g.pick(n + 1) {
		sb.WriteRune(pool[g.pick(len(pool))])
	}
	return sb.String()
}

// integer draws an integer, often near the edges of canonical JSON's range.
func (g *gen) integer() int64 {
	switch g.pick(5) {
	case 0:
		return maxInt - g.r.Int63n(1000)
	case 1:
		return -maxInt + g.r.Int63n(1000)
	case 2:
		return g.r.Int63n(2*maxInt+1) - maxInt
	default:
		return g.r.Int63n(201) - 100
	}
}

// value draws a value nesting at most depth levels.
func (g *gen) value(depth int) *node {
	k := g.pick(7)
	if depth <= 0 && k < 2 {
		k += 2
	}
	switch k {
	case 0:
		return g.object(depth-1, g.pick(5))
	case 1:
		a := &node{kind: kArray}
		for range g.pick(5) {
			a.items = append(a.items, g.value(depth-1))
		}
		return a
	case 2, 3:
		return &node{kind: kString, s: g.text(12, false)}
	case 4:
		return &node{kind: kInt, n: g.integer()}
	default:
		return &node{kind: kRaw, raw: [...]string{"true", "false", "null"}[g.pick(3)]}
	}
}

// object draws an object of n members (fewer if keys collide).
func (g *gen) object(depth, n int) *node {
	o := &node{kind: kObject}
	for range n {
		o.set(g.text(8, true), g.value(depth))
	}
	return o
}

// set adds the member key: v unless o has key already.
func (o *node) set(key string, v *node) {
	for _, k := range o.keys {
		if k == key {
			return
		}
	}
	o.keys = append(o.keys, key)
	o.vals = append(o.vals, v)
}

func str(s string) *node { return &node{kind: kString, s: s} }

func integer(n int64) *node { return &node{kind: kInt, n: n} }

// write appends n as JSON text in a random style: random white space,
// members in random order, characters escaped at random.
func (g *gen) write(dst []byte, n *node) []byte {
	switch n.kind {
	case kObject:
		dst = append(dst, '{')
		for i, j := range g.r.Perm(len(n.keys)) {
			if i > 0 {
				dst = append(g.space(dst), ',')
			}
			dst = g.writeString(g.space(dst), n.keys[j])
			dst = append(g.space(dst), ':')
			dst = g.write(g.space(dst), n.vals[j])
		}
		return append(g.space(dst), '}')
	case kArray:
		dst = append(dst, '[')
		for i, it := range n.items {
			if i > 0 {
				dst = append(g.space(dst), ',')
			}
			dst = g.write(g.space(dst), it)
		}
		return append(g.space(dst), ']')
	case kString:
		return g.writeString(dst, n.s)
	case kInt:
		return strconv.AppendInt(dst, n.n, 10)
	}
	return append(dst, n.raw...)
}

// space appends JSON white space, now and then.
func (g *gen) space(dst []byte) []byte {
	if g.chance(0.8) {
		return dst
	}
	for range g.pick(3) + 1 {
		dst = append(dst, " \t\n\r"[g.pick(4)])
	}
	return dst
}

// writeString appends s as a JSON string, each character escaped or not
// at random where JSON allows both.
func (g *gen) writeString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for _, r := range s {
		must := r < 0x20 || r == '"' || r == '\\'
		if !must && g.chance(0.7) {
			dst = append(dst, string(r)...)
			continue
		}
		switch short := map[rune]string{'"': `\"`, '\\': `\\`, '/': `\/`, '\b': `\b`, '\f': `\f`, '\n': `\n`, '\r': `\r`, '\t': `\t`}[r]; {
		case short != "" && g.chance(0.5):
			dst = append(dst, short...)
		case r >= 0x10000:
			hi, lo := utf16.EncodeRune(r)
			dst = g.writeU(g.writeU(dst, hi), lo)
		default:
			dst = g.writeU(dst, r)
		}
	}
	return append(dst, '"')
}

// writeU appends the escape \uXXXX of r, in upper or lower case hex.
func (g *gen) writeU(dst []byte, r rune) []byte {
	h := fmt.Sprintf(`\u%04x`, r)
	if g.chance(0.5) {
		h = `\u` + strings.ToUpper(h[2:])
	}
	return append(dst, h...)
}

// flawed returns the text of content with one flaw put in.
func (g *gen) flawed(content *node) ([]byte, flaw) {
	var f flaw
	var bad *node
	switch g.pick(13) {
	case 0:
		f, bad = flaw{"fraction", 6}, &node{kind: kRaw, raw: [...]string{"1.5", "-2.25", "100.0"}[g.pick(3)]}
	case 1:
		f, bad = flaw{"lower-case exponent", 6}, &node{kind: kRaw, raw: [...]string{"1e3", "2e-1", "-5e10"}[g.pick(3)]}
	case 2:
		f, bad = flaw{"upper-case exponent", 0}, &node{kind: kRaw, raw: [...]string{"1E3", "7E0"}[g.pick(2)]}
	case 3:
		f, bad = flaw{"zero with a fraction", 0}, &node{kind: kRaw, raw: [...]string{"0.0", "-0.0", "0e0"}[g.pick(3)]}
	case 4:
		f, bad = flaw{"integer out of range", 6}, &node{kind: kRaw, raw: strconv.FormatInt((maxInt+1+g.r.Int63n(1<<40))*int64(1-2*g.pick(2)), 10)}
	case 5:
		f, bad = flaw{"-0", 6}, &node{kind: kRaw, raw: "-0"}
	case 6:
		f, bad = flaw{"lone surrogate", 0}, &node{kind: kRaw, raw: [...]string{`"a\ud800"`, `"\udc00b"`, `"\uD83D\u0041"`}[g.pick(3)]}
	case 7:
		f, bad = flaw{"invalid UTF-8", 0}, &node{kind: kRaw, raw: "\"a\xff\xfeb\""}
	case 8:
		if len(content.keys) == 0 {
			content.set(g.text(4, true), g.value(1))
		}
		text := g.write(nil, content)
		dup := g.writeString(nil, content.keys[0])
		dup = append(dup, `:1,`...)
		return append(append([]byte{'{'}, dup...), text[1:]...), flaw{"duplicate key", 0}
	case 9:
		k := [...]string{`"a\"b"`, `"\n"`, `"x\u0001"`, `"\u0022"`}[g.pick(4)]
		return append([]byte(`{`+k+`:1,`), g.write(nil, content)[1:]...), flaw{"key needing an escape", 3}
	case 10:
		return g.write(nil, &node{kind: kArray, items: []*node{content}}), flaw{"not an object", 3}
	case 11:
		text := g.write(nil, content)
		return text[:len(text)-1], flaw{"truncated", 3}
	default:
		deep := strings.Repeat("[", maxNesting+1) + strings.Repeat("]", maxNesting+1)
		f, bad = flaw{"nested too deep", 0}, &node{kind: kRaw, raw: deep}
	}
	content.keys = append(content.keys, "flaw")
	content.vals = append(content.vals, bad)
	return g.write(nil, content), f
}

// eventID draws an event ID of room version v.
func (g *gen) eventID(v string) string {
	var sum [32]byte
	g.r.Read(sum[:])
	return rulesFor(v).eventID(sum[:])
}

// ids draws up to n event IDs.
func (g *gen) ids(v string, n int) []string {
	ids := make([]string, g.pick(n+1))
	for i := range ids {
		ids[i] = g.eventID(v)
	}
	return ids
}

// serverName draws a server name: a DNS name, or an IP literal with a port.
func (g *gen) serverName() string {
	switch g.pick(3) {
	case 0:
		return fmt.Sprintf("127.0.0.%d:%d", g.pick(255)+1, 1024+g.pick(60000))
	case 1:
		return fmt.Sprintf("[::%x]:%d", g.pick(0xffff)+1, 1024+g.pick(60000))
	}
	return fmt.Sprintf("hs%d.example%d.org", g.pick(1000), g.pick(10))
}

// localpart draws a user ID's localpart.
func (g *gen) localpart() string {
	const chars = "abcdefghijklmnopqrstuvwxyz0123456789._=-/"
	b := make([]byte, 1+g.pick(12))
	for i := range b {
		b[i] = chars[g.pick(len(chars))]
	}
	return string(b)
}

// roomID draws the ID of a room of version v on server.
func (g *gen) roomID(v, server string) string {
	if rulesFor(v).createHasNoRoomID {
		return RoomIDFor(g.eventID(v))
	}
	var b [12]byte
	g.r.Read(b[:])
	return "!" + base64.RawURLEncoding.EncodeToString(b[:]) + ":" + server
}
