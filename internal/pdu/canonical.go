package pdu

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"unicode/utf16"
	"unicode/utf8"
)

// maxNesting is how deep Canonical lets objects and arrays nest.
const maxNesting = 256

// Canonical returns content in Matrix canonical JSON: no insignificant
// space, object keys sorted by code point, strings with only '"', '\' and
// control characters escaped (in their shortest form). It returns an error
// for content that is not a JSON object of UTF-8 text, for numbers that
// are not integers within ±(2^53-1) (no fraction, no exponent, no -0), for
// lone surrogates, duplicate keys, keys holding '"', '\' or a control
// character (gomatrixserverlib cannot sort those), and for nesting deeper
// than 256 levels.
func Canonical(content []byte) ([]byte, error) {
	p := parser{in: content, out: make([]byte, 0, len(content))}
	p.skipSpace()
	if p.peek() != '{' {
		return nil, errors.New("pdu: content is not a JSON object")
	}
	if err := p.value(0); err != nil {
		return nil, err
	}
	p.skipSpace()
	if p.pos != len(p.in) {
		return nil, p.errorf("data after the object")
	}
	return p.out, nil
}

// member is an object member written to parser.out: its key runs from the
// quote at key to the quote before keyEnd, its value ends before end.
type member struct{ key, keyEnd, end int }

// parser reads JSON from in and writes its canonical form to out.
type parser struct {
	in      []byte
	pos     int
	out     []byte
	members []member // the members of the objects being read, innermost last
	scratch []byte   // a copy of an object's members while they are sorted
}

// errorf returns an error at the parser's position.
func (p *parser) errorf(format string, args ...any) error {
	return fmt.Errorf("pdu: content at byte %d: %s", p.pos, fmt.Sprintf(format, args...))
}

// peek returns the next byte, 0 at the end.
func (p *parser) peek() byte {
	if p.pos < len(p.in) {
		return p.in[p.pos]
	}
	return 0
}

// skipSpace passes over JSON's insignificant white space.
func (p *parser) skipSpace() {
	for p.pos < len(p.in) {
		switch p.in[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

// value reads one value at nesting depth.
func (p *parser) value(depth int) error {
	switch c := p.peek(); {
	case c == '{':
		return p.object(depth + 1)
	case c == '[':
		return p.array(depth + 1)
	case c == '"':
		return p.str(false)
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	case c == 't':
		return p.literal("true")
	case c == 'f':
		return p.literal("false")
	case c == 'n':
		return p.literal("null")
	case c == 0 && p.pos == len(p.in):
		return p.errorf("unexpected end")
	default:
		return p.errorf("unexpected %q", c)
	}
}

// object reads an object and writes it with its members sorted by key.
func (p *parser) object(depth int) error {
	if depth > maxNesting {
		return p.errorf("nested deeper than %d", maxNesting)
	}
	p.pos++
	p.out = append(p.out, '{')
	start, base := len(p.out), len(p.members)
	p.skipSpace()
	if p.peek() == '}' {
		p.pos++
		p.out = append(p.out, '}')
		return nil
	}
	for {
		p.skipSpace()
		if p.peek() != '"' {
			return p.errorf("expected a key")
		}
		key := len(p.out)
		if err := p.str(true); err != nil {
			return err
		}
		keyEnd := len(p.out)
		p.skipSpace()
		if p.peek() != ':' {
			return p.errorf("expected ':'")
		}
		p.pos++
		p.out = append(p.out, ':')
		p.skipSpace()
		if err := p.value(depth); err != nil {
			return err
		}
		p.members = append(p.members, member{key: key, keyEnd: keyEnd, end: len(p.out)})
		p.skipSpace()
		c := p.peek()
		p.pos++
		if c == '}' {
			break
		}
		if c != ',' {
			p.pos--
			return p.errorf("expected ',' or '}'")
		}
		p.out = append(p.out, ',')
	}
	err := p.sortMembers(start, p.members[base:])
	p.members = p.members[:base]
	if err != nil {
		return err
	}
	p.out = append(p.out, '}')
	return nil
}

// keyOf returns the bytes of m's key between its quotes: its UTF-8 text,
// since keys that need escapes are refused.
func (p *parser) keyOf(m member) []byte {
	return p.out[m.key+1 : m.keyEnd-1]
}

// sortMembers puts the members ms of the object whose members start at
// start in out in key order, and returns an error for a duplicate key.
func (p *parser) sortMembers(start int, ms []member) error {
	sorted := true
	for i := 1; i < len(ms); i++ {
		switch bytes.Compare(p.keyOf(ms[i-1]), p.keyOf(ms[i])) {
		case 0:
			return fmt.Errorf("pdu: content has the key %q twice", p.keyOf(ms[i]))
		case 1:
			sorted = false
		}
	}
	if sorted {
		return nil
	}
	slices.SortFunc(ms, func(a, b member) int { return bytes.Compare(p.keyOf(a), p.keyOf(b)) })
	for i := 1; i < len(ms); i++ {
		if bytes.Equal(p.keyOf(ms[i-1]), p.keyOf(ms[i])) {
			return fmt.Errorf("pdu: content has the key %q twice", p.keyOf(ms[i]))
		}
	}
	p.scratch = append(p.scratch[:0], p.out[start:]...)
	p.out = p.out[:start]
	for i, m := range ms {
		if i > 0 {
			p.out = append(p.out, ',')
		}
		p.out = append(p.out, p.scratch[m.key-start:m.end-start]...)
	}
	return nil
}

// array reads an array.
func (p *parser) array(depth int) error {
	if depth > maxNesting {
		return p.errorf("nested deeper than %d", maxNesting)
	}
	p.pos++
	p.out = append(p.out, '[')
	p.skipSpace()
	if p.peek() == ']' {
		p.pos++
		p.out = append(p.out, ']')
		return nil
	}
	for {
		p.skipSpace()
		if err := p.value(depth); err != nil {
			return err
		}
		p.skipSpace()
		c := p.peek()
		p.pos++
		if c == ']' {
			p.out = append(p.out, ']')
			return nil
		}
		if c != ',' {
			p.pos--
			return p.errorf("expected ',' or ']'")
		}
		p.out = append(p.out, ',')
	}
}

// str reads a string and writes it in canonical form; a key must need no
// escape there.
func (p *parser) str(key bool) error {
	p.pos++
	p.out = append(p.out, '"')
	for {
		start := p.pos
		for p.pos < len(p.in) {
			c := p.in[p.pos]
			if c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
				break
			}
			p.pos++
		}
		p.out = append(p.out, p.in[start:p.pos]...)
		switch c := p.peek(); {
		case p.pos == len(p.in):
			return p.errorf("unterminated string")
		case c == '"':
			p.pos++
			p.out = append(p.out, '"')
			return nil
		case c < 0x20:
			return p.errorf("control character in a string")
		case c >= utf8.RuneSelf:
			r, n := utf8.DecodeRune(p.in[p.pos:])
			if r == utf8.RuneError && n == 1 {
				return p.errorf("invalid UTF-8")
			}
			p.out = append(p.out, p.in[p.pos:p.pos+n]...)
			p.pos += n
		default:
			r, err := p.escape()
			if err != nil {
				return err
			}
			if r < 0x20 || r == '"' || r == '\\' {
				if key {
					return p.errorf("a key holding %q", r)
				}
				p.out = appendEscape(p.out, r)
			} else {
				p.out = utf8.AppendRune(p.out, r)
			}
		}
	}
}

// escape reads the escape sequence at the backslash under the parser and
// returns the character it stands for.
func (p *parser) escape() (rune, error) {
	if p.pos+1 >= len(p.in) {
		return 0, p.errorf("unterminated escape")
	}
	c := p.in[p.pos+1]
	p.pos += 2
	switch c {
	case '"', '\\', '/':
		return rune(c), nil
	case 'b':
		return '\b', nil
	case 'f':
		return '\f', nil
	case 'n':
		return '\n', nil
	case 'r':
		return '\r', nil
	case 't':
		return '\t', nil
	case 'u':
		r, err := p.hex4()
		if err != nil || !utf16.IsSurrogate(r) {
			return r, err
		}
		if r >= 0xdc00 || !bytes.HasPrefix(p.in[p.pos:], []byte(`\u`)) {
			return 0, p.errorf("lone surrogate %U", r)
		}
		p.pos += 2
		low, err := p.hex4()
		if err != nil {
			return 0, err
		}
		if low < 0xdc00 || low > 0xdfff {
			return 0, p.errorf("lone surrogate %U", r)
		}
		return utf16.DecodeRune(r, low), nil
	}
	return 0, p.errorf("invalid escape \\%c", c)
}

// hex4 reads the four hex digits of a \u escape.
func (p *parser) hex4() (rune, error) {
	if p.pos+4 > len(p.in) {
		return 0, p.errorf("short \\u escape")
	}
	var r rune
	for _, c := range p.in[p.pos : p.pos+4] {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, p.errorf("bad \\u escape")
		}
		r = r<<4 | rune(d)
	}
	p.pos += 4
	return r, nil
}

// number reads an integer within canonical JSON's range.
func (p *parser) number() error {
	start := p.pos
	if p.in[p.pos] == '-' {
		p.pos++
	}
	digits := p.pos
	switch c := p.peek(); {
	case c == '0':
		p.pos++
	case c >= '1' && c <= '9':
		for c := p.peek(); c >= '0' && c <= '9'; c = p.peek() {
			p.pos++
		}
	default:
		return p.errorf("bad number")
	}
	switch p.peek() {
	case '.', 'e', 'E':
		return p.errorf("a number that is not an integer")
	}
	if p.in[start] == '-' && p.in[digits] == '0' {
		return p.errorf("-0")
	}
	if p.pos-digits > 16 {
		return p.errorf("an integer outside ±(2^53-1)")
	}
	var n int64
	for _, c := range p.in[digits:p.pos] {
		n = n*10 + int64(c-'0')
	}
	if n > maxInt {
		return p.errorf("an integer outside ±(2^53-1)")
	}
	p.out = append(p.out, p.in[start:p.pos]...)
	return nil
}

// literal reads true, false or null.
func (p *parser) literal(word string) error {
	if !bytes.HasPrefix(p.in[p.pos:], []byte(word)) {
		return p.errorf("bad literal")
	}
	p.pos += len(word)
	p.out = append(p.out, word...)
	return nil
}
