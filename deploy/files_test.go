package deploy

import (
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The files this package holds, relative to it.
const (
	dashboardFile = "grafana/persona.json"
	rulesFile     = "prometheus/rules.yml"
	rulesTestFile = "prometheus/rules_test.yml"
	operationsDoc = "../docs/OPERATIONS.md"
)

// tool returns the path of the Prometheus tool name (prometheus or
// promtool). Where it is missing the test fails under CI (CI set, as
// .ci/run sets it, which installs the tools) and is skipped elsewhere.
func tool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is not installed (CI is set): .ci/run installs it with apt-get install -y prometheus", name)
	}
	t.Skipf("%s is not installed: apt-get install -y prometheus (Debian's package brings prometheus and promtool)", name)
	return ""
}

// rule is one rule of rules.yml.
type rule struct {
	Record      string            `yaml:"record"`
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// readRules returns every rule of rules.yml, in file order.
func readRules(t *testing.T) []rule {
	t.Helper()
	var file struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []rule `yaml:"rules"`
		} `yaml:"groups"`
	}
	readYAML(t, rulesFile, &file)
	var rules []rule
	for _, g := range file.Groups {
		rules = append(rules, g.Rules...)
	}
	if len(rules) == 0 {
		t.Fatalf("%s holds no rules", rulesFile)
	}
	return rules
}

// readYAML decodes the YAML file path into v.
func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// labelValues matches a Grafana variable query label_values(selector, label).
var labelValues = regexp.MustCompile(`^label_values\((.+),\s*[a-zA-Z_][a-zA-Z0-9_]*\)$`)

// dashboardExprs returns every PromQL expression of the dashboard: each
// target's expr wherever its panel is (rows' nested panels included) and,
// for each query variable label_values(selector, label), the selector.
func dashboardExprs(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels     []any `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if e, ok := v["expr"].(string); ok {
				exprs = append(exprs, e)
			}
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(dash.Panels)
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(string)
		if m, ok := v.Query.(map[string]any); ok {
			q, _ = m["query"].(string)
		}
		sel := labelValues.FindStringSubmatch(q)
		if sel == nil {
			t.Fatalf("%s: variable %s queries %q: this test reads label_values(selector, label) only", dashboardFile, v.Name, q)
		}
		exprs = append(exprs, sel[1])
	}
	if len(exprs) == 0 {
		t.Fatalf("%s holds no expressions", dashboardFile)
	}
	return exprs
}

// withBool returns expr with the bool modifier after each comparison
// operator outside label matchers and strings, so that a comparison
// answers 0 or 1 for every series it compares instead of dropping those
// it does not hold for: an alert's expression then returns series while
// the alert is quiet.
func withBool(expr string) string {
	var b strings.Builder
	braces := 0
	var quote byte
	for i := 0; i < len(expr); i++ {
		c := expr[i]
		switch {
		case quote != 0:
			b.WriteByte(c)
			if c == '\\' && i+1 < len(expr) {
				i++
				b.WriteByte(expr[i])
			} else if c == quote {
				quote = 0
			}
			continue
		case c == '"' || c == '\'' || c == '`':
			quote = c
		case c == '{':
			braces++
		case c == '}':
			braces--
		case braces == 0 && (c == '<' || c == '>' || c == '=' || c == '!'):
			op := expr[i : i+1]
			if i+1 < len(expr) && expr[i+1] == '=' {
				op = expr[i : i+2]
			}
			if op == "=" || op == "!" {
				break
			}
			b.WriteString(op)
			i += len(op) - 1
			rest := strings.TrimLeft(expr[i+1:], " ")
			if word, _, _ := strings.Cut(rest, " "); word != "bool" {
				b.WriteString(" bool")
				if !strings.HasPrefix(expr[i+1:], " ") {
					b.WriteByte(' ')
				}
			}
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func TestWithBool(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{`up{job="persona"} == 0`, `up{job="persona"} == bool 0`},
		{`a{x!="1", y=~"<|>"} > 0 and deriv(a[15m]) >= 0`, `a{x!="1", y=~"<|>"} > bool 0 and deriv(a[15m]) >= bool 0`},
		{`a > bool 1`, `a > bool 1`},
		{`a<b`, `a< bool b`},
		{`a != 2 or b <= 3`, `a != bool 2 or b <= bool 3`},
		{`sum by (i) (a{s="x>1"})`, `sum by (i) (a{s="x>1"})`},
	} {
		if got := withBool(tc.in); got != tc.want {
			t.Errorf("withBool(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
