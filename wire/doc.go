// Package wire holds the protobuf messages persona's actors exchange: the
// only types that cross an actor boundary, and so, later, a node's or a
// server's. The .proto files are the source; the generated code is
// committed (make generate regenerates it).
package wire

// GetPriority puts rooms' acks last in a user's mailbox (protoactor's
// default is 4): a delay only postpones the next sends of a fan-out, and
// acks are cumulative and carry versions, so overtaking them is harmless.
func (*UpdateAcks) GetPriority() int8 { return 2 }
