package raft

// StateMachine is the replicated state a Driver applies committed
// commands to: one per node, holding the state of every group the node
// has a replica of. Each group's state is its own key range; nothing of
// one group's state depends on another's.
//
// The Driver calls every method from its loop, one call at a time; none
// may call the Driver back.
type StateMachine interface {
	// Applied returns the index of the last entry of group applied to
	// the state, as recorded by Apply or Restore (0 for none). The Driver
	// asks when it opens and when a group is added.
	Applied(group uint64) (uint64, error)
	// Apply applies a round's committed commands: for each update, its
	// commands in order, and records its Index as the group's applied
	// index, atomically with them. It need not be durable when it
	// returns: the log keeps the entries until Flushed tells they are.
	// The commands' bytes must not be modified. Every replica applies the
	// same commands, so a command's content must not make Apply fail (a
	// bad one is a no-op or a recorded refusal); an error, that the state
	// cannot be written, stops the Driver.
	Apply(updates []Update) error
	// Flushed tells, without syncing, how far the state is durable: the
	// mark of everything applied so far (newest), and the mark before
	// which everything applied is durable (durable). What was applied
	// before a call that returned newest n is durable once a later call
	// returns durable > n. The Driver keeps log entries until then.
	Flushed() (durable, newest uint64, err error)
	// Snapshot fixes the group's state as it is, at the index last
	// applied, and returns the function that reads it: what Restore on
	// another node takes. The Driver calls Snapshot in its loop and read
	// once, outside it, while later commands apply.
	Snapshot(group uint64) (read func() ([]byte, error), err error)
	// Restore replaces the group's state with data, a Snapshot taken at
	// index, records index as the group's applied index, and returns once
	// all of that is durable. The Driver calls it outside its loop, while
	// other groups' commands apply, and applies nothing to the group
	// meanwhile.
	Restore(group, index uint64, data []byte) error
}

// Update is what one group's committed entries of a round change: the
// commands in log order, and the index of the last entry, which the state
// machine records as applied. An update may carry no command (entries of
// raft's own, membership changes); its Index still counts.
type Update struct {
	Group    uint64
	Index    uint64
	Commands [][]byte
}
