// Package wire holds the protobuf messages persona's actors exchange
// (proto package persona.wire): the only types that cross an actor
// boundary, and so, later, a node's or a server's. The .proto files are the
// source; the generated code is committed (make generate regenerates it).
//
// wire owns the messages' shapes and what a message says of itself (an
// Error's text, a mailbox priority), nothing more: it imports no other
// persona package, holds no domain logic, and leaves HTTP statuses and
// errcodes to api.
package wire

// GetPriority returns 2, below protoactor's default 4, so that rooms'
// acks come last in a user's mailbox: a delay only postpones the next
// sends of a fan-out, and acks are cumulative and carry versions, so
// overtaking them is harmless.
func (*UpdateAcks) GetPriority() int8 { return 2 }
