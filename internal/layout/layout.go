// Package layout holds the test that keeps persona's package graph the one
// ARCHITECTURE.md draws: imports run one way, from the binary through api
// and the domain actors down to the runtime and storage.
package layout
