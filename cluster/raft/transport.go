package raft

import (
	"encoding/binary"
	"errors"
	"fmt"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Envelope is a raft message of one group.
type Envelope struct {
	Group uint64
	Msg   *pb.Message
}

// Transport carries a Driver's messages to the other nodes and theirs to
// it. Raft tolerates lost messages; a transport need not retry.
type Transport interface {
	// Start begins handing r every batch received and every batch that
	// could not be sent. Open calls it once.
	Start(r Receiver) error
	// Send queues msgs, a round's messages to node to, to be written in
	// one piece. It must not block: when it cannot queue them (no address
	// for to, its queue full) it returns an error and drops them. The
	// transport owns msgs from then on; they must not be modified.
	Send(to uint64, msgs []Envelope) error
	// Close stops sending and receiving and returns once the transport's
	// goroutines have ended.
	Close() error
}

// Receiver takes what a Transport receives: a Driver's loop, through a
// queue. Its methods may block until the loop takes the batch, and return
// at once once the Driver is closed.
type Receiver interface {
	// Receive takes a batch sent by node from.
	Receive(from uint64, msgs []Envelope)
	// Unreachable takes a batch queued for node to that was not written.
	Unreachable(to uint64, msgs []Envelope)
}

// A frame is a batch on the wire: its payload's length (4 bytes, big
// endian), then the payload: the number of messages (uvarint), then each
// message's group (uvarint), length (uvarint) and protobuf encoding.

// frameTarget is the payload past which a writer starts another frame.
// A leader catching a follower up can queue hundreds of megabytes for it
// at once; frames of a few megabytes keep both ends' buffers small, and
// only a message larger than this (a snapshot) has a frame of its own,
// within the reader's limit.
const frameTarget = 4 << 20

// sizedMessage is the payload a message adds to a frame.
func sizedMessage(e Envelope) (payload, encoded int) {
	encoded = proto.MarshalOptions{}.Size(e.Msg)
	return uvarintLen(e.Group) + uvarintLen(uint64(encoded)) + encoded, encoded
}

func uvarintLen(v uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], v)
}

// splitFrames calls frame with msgs in order, cut into runs whose
// payload stays within target (a message larger than target makes a run
// of its own), each with its messages' encoded sizes and its payload.
func splitFrames(msgs []Envelope, target int, frame func(msgs []Envelope, sizes []int, payload int) error) error {
	sizes := make([]int, len(msgs))
	for len(msgs) > 0 {
		n, payload := 0, 0
		for n < len(msgs) {
			p, enc := sizedMessage(msgs[n])
			if n > 0 && payload+p > target {
				break
			}
			sizes[n], payload = enc, payload+p
			n++
		}
		if err := frame(msgs[:n], sizes[:n], payload+uvarintLen(uint64(n))); err != nil {
			return err
		}
		msgs = msgs[n:]
	}
	return nil
}

// appendFrame appends the frame of msgs to b; sizes, if not nil, are
// their encoded sizes.
func appendFrame(b []byte, msgs []Envelope, sizes []int) ([]byte, error) {
	start := len(b)
	b = append(b, 0, 0, 0, 0)
	b = binary.AppendUvarint(b, uint64(len(msgs)))
	opts := proto.MarshalOptions{}
	for i, e := range msgs {
		size := 0
		if sizes != nil {
			size = sizes[i]
		} else {
			size = opts.Size(e.Msg)
		}
		b = binary.AppendUvarint(b, e.Group)
		b = binary.AppendUvarint(b, uint64(size))
		var err error
		if b, err = opts.MarshalAppend(b, e.Msg); err != nil {
			return b[:start], fmt.Errorf("encode a message of group %d: %w", e.Group, err)
		}
	}
	size := len(b) - start - 4
	if uint64(size) > 1<<32-1 {
		return b[:start], errors.New("frame over 4 GiB")
	}
	binary.BigEndian.PutUint32(b[start:], uint32(size))
	return b, nil
}

// decodeFrame returns the messages of a frame's payload.
func decodeFrame(payload []byte) ([]Envelope, error) {
	r := reader{b: payload}
	n := r.uvarint()
	if n > uint64(len(payload)) {
		return nil, errors.New("bad frame: message count")
	}
	msgs := make([]Envelope, 0, n)
	for range n {
		group, data := r.uvarint(), r.bytes()
		if r.err != nil {
			return nil, fmt.Errorf("bad frame: %w", r.err)
		}
		m := &pb.Message{}
		if err := proto.Unmarshal(data, m); err != nil {
			return nil, fmt.Errorf("bad frame: a message of group %d: %w", group, err)
		}
		msgs = append(msgs, Envelope{Group: group, Msg: m})
	}
	if len(r.b) != 0 {
		return nil, errors.New("bad frame: bytes after the last message")
	}
	return msgs, nil
}
