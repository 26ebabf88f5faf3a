// Package deploy holds what operators load into their monitoring:
// grafana/persona.json, the Grafana dashboard, and prometheus/rules.yml,
// the recording rules and alerts it and docs/OPERATIONS.md rely on, with
// prometheus/rules_test.yml, their promtool unit tests. It has no code:
// its tests check the files with promtool and ask a real Prometheus,
// scraping live nodes, for every expression in them.
package deploy
