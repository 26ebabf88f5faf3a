//go:build race

package node

// raceBuild reports a binary built with -race: protoactor's remote has data
// races of its own (grpc's global logger, set by every start), so such a
// node in a cluster starts no remote and owns every partition itself.
const raceBuild = true
