//go:build !race

package node

// raceBuild reports a binary built with -race (race.go).
const raceBuild = false
