package node

import (
	"persona/cluster"
)

// The phases of a node's life, in order. A node is ready only in
// phaseServing, and only while its storage and listeners are healthy and,
// in a cluster, its membership lists it alive and ready.
const (
	phaseStarting int32 = iota // Start has not started every listener yet
	phaseServing               // Start returned: listeners up, wake marks resumed
	phaseStopping              // Stop began: not ready, then leave, close listeners, stop actors, close storage
)

// Live returns "" while the node serves: it is not stopping, no listener
// stopped on its own, and storage is open, its last commit round
// succeeded and a read works. Else it returns "stopping" or "failing" and
// why. It writes nothing.
func (n *Node) Live() (status, reason string) {
	if n.phase.Load() == phaseStopping {
		return "stopping", "the node is stopping"
	}
	if p := n.failure.Load(); p != nil {
		return "failing", "a listener stopped: " + (*p).Error()
	}
	if err := n.store.Health(); err != nil {
		return "failing", err.Error()
	}
	return "", ""
}

// Ready returns "" once the node takes traffic: Start has started every
// listener and resumed the actors' pending work (their wake marks), the
// node is live, and with cluster.enabled its membership lists it alive
// and ready. Else it returns "starting", "stopping", "failing" or "not in
// the cluster" and why.
func (n *Node) Ready() (status, reason string) {
	switch n.phase.Load() {
	case phaseStarting:
		return "starting", "the node has not started every listener yet"
	case phaseStopping:
		return "stopping", "the node is stopping"
	}
	if status, reason := n.Live(); status != "" {
		return status, reason
	}
	if n.members != nil && !selfReady(n.members) {
		return "not in the cluster", "the cluster membership does not list this node alive and ready"
	}
	return "", ""
}

// ready reports whether Ready returns "", for the persona_ready gauge.
func (n *Node) ready() bool {
	status, _ := n.Ready()
	return status == ""
}

// selfReady reports whether m lists this node alive, ready and not
// leaving.
func selfReady(m *cluster.Membership) bool {
	name := m.Name()
	for _, member := range m.Members() {
		if member.Name == name {
			return member.State == cluster.StateAlive && member.Ready && !member.Leaving
		}
	}
	return false
}

// noteFailure records a listener that stopped on its own, for Live and
// for Failed.
func (n *Node) noteFailure(err error) {
	n.failure.CompareAndSwap(nil, &err)
	n.done <- err
}
