package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// envPrefix starts every environment override: PERSONA_ followed by the
// key's YAML path in upper case joined with "_", e.g. PERSONA_LISTEN_CLIENT.
const envPrefix = "PERSONA_"

// Load reads the YAML file at path and builds a Config from it: Default,
// then the file decoded strictly, then PERSONA_* environment overrides,
// then Validate. Errors about the file name it, the line and the key.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return parse(path, data, os.LookupEnv)
}

// Parse is Load for YAML already in memory: Default, then data decoded
// strictly, then PERSONA_* environment overrides, then Validate.
// Empty data yields the defaults.
func Parse(data []byte) (*Config, error) {
	return parse("", data, os.LookupEnv)
}

// parse implements Load and Parse; name prefixes YAML errors when not empty
// and lookup reads the environment.
func parse(name string, data []byte, lookup func(string) (string, bool)) (*Config, error) {
	c := Default()
	if err := decodeYAML(name, data, c); err != nil {
		return nil, err
	}
	if err := errors.Join(applyEnv(c, lookup), c.Validate()); err != nil {
		return nil, err
	}
	return c, nil
}

// decodeYAML decodes one YAML document into c, rejecting unknown keys.
// Type errors are re-explained per key in persona's dotted key names.
func decodeYAML(name string, data []byte, c *Config) error {
	pfx := ""
	if name != "" {
		pfx = name + ": "
	}
	syntaxErr := func(err error) error {
		return fmt.Errorf("%s%s", pfx, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(c)
	if errors.Is(err, io.EOF) {
		return nil // no document at all: keep the defaults
	}
	var te *yaml.TypeError
	if err != nil && !errors.As(err, &te) {
		return syntaxErr(err) // already "yaml: line N: ..."
	}
	if err == nil {
		var extra yaml.Node
		if err := dec.Decode(&extra); err == nil {
			return fmt.Errorf("%sline %d: only one YAML document is allowed", pfx, extra.Line)
		} else if !errors.Is(err, io.EOF) {
			return syntaxErr(err)
		}
	}
	// yaml.v3 lets through values persona rejects (1.5 for an integer is
	// truncated, an empty value keeps the default) and its type errors name
	// Go types, so check the document again key by key.
	var errs []error
	add := func(line int, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%sline %d: %s", pfx, line, fmt.Sprintf(format, args...)))
	}
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) == nil && len(doc.Content) > 0 {
		check(doc.Content[0], reflect.TypeOf(*c), "", add)
	}
	if len(errs) == 0 && te != nil { // check found nothing: fall back to yaml.v3's words
		for _, msg := range te.Errors {
			errs = append(errs, errors.New(pfx+msg))
		}
	}
	return errors.Join(errs...)
}

// check walks the mapping n alongside struct type t and reports unknown
// and duplicate keys and values that do not fit their field. path is the
// dotted key of n ("" at the top level).
func check(n *yaml.Node, t reflect.Type, path string, add func(int, string, ...any)) {
	n = deref(n)
	if isNull(n) {
		return // an empty section keeps its defaults
	}
	if n.Kind != yaml.MappingNode {
		where := "the top level"
		if path != "" {
			where = path
		}
		add(n.Line, "%s: expected a mapping of keys, got %s", where, kindName(n))
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		key := k.Value
		if path != "" {
			key = path + "." + k.Value
		}
		if first, dup := seen[k.Value]; dup {
			add(k.Line, "duplicate key %q (first at line %d)", key, first)
			continue
		}
		seen[k.Value] = k.Line
		f, ok := fieldByKey(t, k.Value)
		switch {
		case !ok:
			add(k.Line, "unknown key %q", key)
		case isSection(f.Type):
			check(v, f.Type, key, add)
		default:
			checkValue(deref(v), f.Type, key, add)
		}
	}
}

// checkValue reports a value v that does not fit a field of type t.
func checkValue(v *yaml.Node, t reflect.Type, key string, add func(int, string, ...any)) {
	switch t.Kind() {
	case reflect.Slice:
		checkList(v, t, key, add)
		return
	case reflect.Map:
		checkMap(v, t, key, add)
		return
	}
	switch {
	case v.Kind != yaml.ScalarNode:
		add(v.Line, "%s: expected %s, got %s", key, describe(t), kindName(v))
	case isNull(v) && t.Kind() == reflect.String:
		add(v.Line, `%s: no value; write "" for an empty string or remove the key for the default`, key)
	case isNull(v):
		add(v.Line, "%s: no value; remove the key for the default", key)
	case !tagFits(v.ShortTag(), t) || v.Decode(reflect.New(t).Interface()) != nil:
		add(v.Line, "%s: cannot parse %q as %s", key, v.Value, describe(t))
	}
}

// checkList reports a value v that is not a list fitting the slice type t,
// or an item that does not fit t's element type.
func checkList(v *yaml.Node, t reflect.Type, key string, add func(int, string, ...any)) {
	switch {
	case isNull(v):
		add(v.Line, "%s: no value; write [] for an empty list or remove the key for the default", key)
	case v.Kind != yaml.SequenceNode:
		add(v.Line, "%s: expected %s, got %s", key, describe(t), kindName(v))
	default:
		for i, item := range v.Content {
			checkValue(deref(item), t.Elem(), fmt.Sprintf("%s[%d]", key, i), add)
		}
	}
}

// checkMap reports a value v that is not a mapping fitting the map type t,
// a duplicate key, or a value that does not fit t's element type.
func checkMap(v *yaml.Node, t reflect.Type, key string, add func(int, string, ...any)) {
	switch {
	case isNull(v):
		add(v.Line, "%s: no value; write {} for an empty mapping or remove the key for the default", key)
		return
	case v.Kind != yaml.MappingNode:
		add(v.Line, "%s: expected %s, got %s", key, describe(t), kindName(v))
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := deref(v.Content[i]), deref(v.Content[i+1])
		entry := fmt.Sprintf("%s[%q]", key, k.Value)
		if k.Kind != yaml.ScalarNode || isNull(k) {
			add(k.Line, "%s: expected %s, got %s as a key", key, describe(t), kindName(k))
			continue
		}
		if first, dup := seen[k.Value]; dup {
			add(k.Line, "duplicate key %s (first at line %d)", entry, first)
			continue
		}
		seen[k.Value] = k.Line
		checkValue(val, t.Elem(), entry, add)
	}
}

// tagFits reports whether a scalar resolved to tag may fill a field of type t.
func tagFits(tag string, t reflect.Type) bool {
	switch {
	case t == durationType:
		return tag == "!!str"
	case t.Kind() == reflect.Bool:
		return tag == "!!bool"
	case t.Kind() == reflect.Int, t.Kind() == reflect.Int64:
		return tag == "!!int"
	case t.Kind() == reflect.Float64:
		return tag == "!!int" || tag == "!!float"
	}
	return true // any scalar reads as a string
}

func deref(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		return n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	}
	return fmt.Sprintf("the value %q", n.Value)
}

var durationType = reflect.TypeOf(time.Duration(0))

// isSection reports whether t is a nested section rather than a value.
func isSection(t reflect.Type) bool {
	return t.Kind() == reflect.Struct && t != durationType
}

// describe names the kind of value a field of type t expects.
func describe(t reflect.Type) string {
	switch {
	case t == durationType:
		return `a duration such as "500ms", "2s" or "1m30s"`
	case t.Kind() == reflect.Bool:
		return "a boolean (true or false)"
	case t.Kind() == reflect.Int, t.Kind() == reflect.Int64:
		return "an integer"
	case t.Kind() == reflect.Float64:
		return "a number"
	case t.Kind() == reflect.Slice:
		return "a list such as [a, b]"
	case t.Kind() == reflect.Map:
		return "a mapping such as {a: b}"
	}
	return "a string"
}

// keyOf returns the YAML key of a struct field.
func keyOf(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	return name
}

func fieldByKey(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		if f := t.Field(i); keyOf(f) == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// leaves calls fn for every value field under the struct v with its YAML path.
func leaves(v reflect.Value, path []string, fn func(path []string, f reflect.Value)) {
	for i := range v.NumField() {
		p := append(path[:len(path):len(path)], keyOf(v.Type().Field(i)))
		if f := v.Field(i); isSection(f.Type()) {
			leaves(f, p, fn)
		} else {
			fn(p, f)
		}
	}
}

// envName is the environment variable overriding the key at path.
func envName(path []string) string {
	return envPrefix + strings.ToUpper(strings.Join(path, "_"))
}

// applyEnv sets every field whose PERSONA_* variable is set (even to "").
// Bad values are reported together, each naming its variable.
func applyEnv(c *Config, lookup func(string) (string, bool)) error {
	var errs []error
	leaves(reflect.ValueOf(c).Elem(), nil, func(path []string, f reflect.Value) {
		name := envName(path)
		if s, ok := lookup(name); ok {
			if err := setFromString(f, s); err != nil {
				errs = append(errs, fmt.Errorf("%s: cannot parse %q as %s", name, s, describeEnv(f.Type())))
			}
		}
	})
	return errors.Join(errs...)
}

// describeEnv names the kind of value an environment variable for a field
// of type t holds.
func describeEnv(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Slice:
		return "a list such as a,b"
	case reflect.Map:
		return "a mapping such as a=b,c=d"
	}
	return describe(t)
}

// setFromString parses s into f according to f's type; f is left alone on
// error. A list is written a,b and a mapping a=b,c=d; "" is empty.
func setFromString(f reflect.Value, s string) error {
	var v any
	var err error
	switch {
	case f.Kind() == reflect.Slice:
		v, err = splitList(s)
	case f.Kind() == reflect.Map:
		v, err = splitMap(s)
	case f.Type() == durationType:
		v, err = time.ParseDuration(s)
	case f.Kind() == reflect.String:
		v = s
	case f.Kind() == reflect.Bool:
		v, err = strconv.ParseBool(s)
	case f.Kind() == reflect.Int, f.Kind() == reflect.Int64:
		var n int64
		n, err = strconv.ParseInt(s, 10, f.Type().Bits())
		v = n
	case f.Kind() == reflect.Float64:
		v, err = strconv.ParseFloat(s, 64)
	default:
		panic("config: no environment parser for " + f.Type().String())
	}
	if err == nil {
		f.Set(reflect.ValueOf(v).Convert(f.Type()))
	}
	return err
}

// splitList parses a,b into its items, each trimmed; "" is the empty list.
func splitList(s string) ([]string, error) {
	items := []string{}
	if strings.TrimSpace(s) == "" {
		return items, nil
	}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			return nil, errors.New("empty item")
		}
		items = append(items, item)
	}
	return items, nil
}

// splitMap parses a=b,c=d into its entries, each part trimmed; "" is the
// empty mapping.
func splitMap(s string) (map[string]string, error) {
	items, err := splitList(s)
	if err != nil {
		return nil, err
	}
	m := make(map[string]string, len(items))
	for _, item := range items {
		k, v, ok := strings.Cut(item, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if _, dup := m[k]; !ok || k == "" || dup {
			return nil, fmt.Errorf("bad entry %q", item)
		}
		m[k] = v
	}
	return m, nil
}
