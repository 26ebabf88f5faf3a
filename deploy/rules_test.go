package deploy

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestRulesPassPromtool checks rules.yml with promtool and runs its unit
// tests, rules_test.yml.
func TestRulesPassPromtool(t *testing.T) {
	t.Parallel()
	promtool := tool(t, "promtool")
	for _, args := range [][]string{
		{"check", "rules", rulesFile},
		{"test", "rules", rulesTestFile},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestEveryAlertIsTestedAndDocumented fails on an alert of rules.yml
// without a summary, a description and a runbook, without a unit test in
// rules_test.yml that fires it and one that leaves it quiet, or without
// its section in docs/OPERATIONS.md.
func TestEveryAlertIsTestedAndDocumented(t *testing.T) {
	t.Parallel()
	var tests struct {
		Tests []struct {
			Name          string `yaml:"name"`
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	readYAML(t, rulesTestFile, &tests)
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	doc, err := os.ReadFile(operationsDoc)
	if err != nil {
		t.Fatal(err)
	}
	alerts := 0
	for _, r := range readRules(t) {
		if r.Alert == "" {
			continue
		}
		alerts++
		for _, key := range []string{"summary", "description", "runbook"} {
			if strings.TrimSpace(r.Annotations[key]) == "" {
				t.Errorf("%s: alert %s has no %s annotation", rulesFile, r.Alert, key)
			}
		}
		if r.Labels["severity"] == "" {
			t.Errorf("%s: alert %s has no severity label", rulesFile, r.Alert)
		}
		if !fires[r.Alert] {
			t.Errorf("%s: no test fires %s", rulesTestFile, r.Alert)
		}
		if !quiet[r.Alert] {
			t.Errorf("%s: no test expects %s quiet", rulesTestFile, r.Alert)
		}
		if !strings.Contains(string(doc), "\n### "+r.Alert+"\n") {
			t.Errorf("%s has no section ### %s", operationsDoc, r.Alert)
		}
	}
	if alerts == 0 {
		t.Fatalf("%s holds no alerts", rulesFile)
	}
}
