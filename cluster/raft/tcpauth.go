package raft

import (
	"bufio"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// A TCPTransport with keys (TCPOptions.Keys) authenticates every
// connection before its first frame, by challenge and response: the
// acceptor sends a random nonce of nonceSize bytes; the dialer answers
// with its handshake (magic, version, node id) followed by
// HMAC-SHA256(k, nonce || handshake), where k is
// HMAC-SHA256(key, raftKeyLabel) for the first of its keys. The acceptor
// takes the answer made with any of its keys, so that keys rotate as
// memberlist's do, and closes the connection otherwise. Without keys
// neither side sends or waits for anything more than the handshake.
//
// This proves that the dialer holds a key, once per connection; it
// neither encrypts nor signs the frames that follow, so whoever can read
// or alter the traffic between two nodes still can.
const (
	nonceSize     = 32
	raftKeyLabel  = "persona cluster raft peer v1"
	handshakeSize = 13
	warnEvery     = 10 * time.Second
)

// peerKeys derives the keys handshakes are signed with from the cluster's
// keys, in the same order.
func peerKeys(keys [][]byte) [][]byte {
	out := make([][]byte, len(keys))
	for i, k := range keys {
		m := hmac.New(sha256.New, k)
		m.Write([]byte(raftKeyLabel))
		out[i] = m.Sum(nil)
	}
	return out
}

// proof is the dialer's answer to nonce with key k for handshake hs.
func proof(k, nonce, hs []byte) []byte {
	m := hmac.New(sha256.New, k)
	m.Write(nonce)
	m.Write(hs)
	return m.Sum(nil)
}

// handshake returns the bytes that open a connection from this node.
func (t *TCPTransport) handshake() []byte {
	hs := binary.BigEndian.AppendUint32(nil, tcpMagic)
	hs = append(hs, tcpVersion)
	return binary.BigEndian.AppendUint64(hs, t.opts.NodeID)
}

// greet opens a dialled connection: with keys, it reads the acceptor's
// nonce and sends the handshake and its proof; without, the handshake.
func (t *TCPTransport) greet(conn net.Conn) error {
	hs := t.handshake()
	if len(t.keys) > 0 {
		var nonce [nonceSize]byte
		conn.SetReadDeadline(time.Now().Add(t.opts.DialTimeout)) // part of connecting
		if _, err := io.ReadFull(conn, nonce[:]); err != nil {
			return fmt.Errorf("read the challenge: %w", err)
		}
		hs = append(hs, proof(t.keys[0], nonce[:], hs)...)
	}
	conn.SetWriteDeadline(time.Now().Add(t.opts.WriteTimeout))
	_, err := conn.Write(hs)
	return err
}

// errBadProof is a handshake whose proof matches none of the keys.
var errBadProof = errors.New("the peer proved no key of this cluster")

// admit reads the handshake of an accepted connection, after sending the
// challenge when the transport has keys, and returns the dialler's node id.
func (t *TCPTransport) admit(conn net.Conn, r *bufio.Reader) (uint64, error) {
	deadline := time.Now().Add(t.opts.WriteTimeout)
	var nonce [nonceSize]byte
	if len(t.keys) > 0 {
		if _, err := rand.Read(nonce[:]); err != nil {
			return 0, err
		}
		conn.SetWriteDeadline(deadline)
		if _, err := conn.Write(nonce[:]); err != nil {
			return 0, err
		}
	}
	in := make([]byte, handshakeSize, handshakeSize+sha256.Size)
	if len(t.keys) > 0 {
		in = in[:handshakeSize+sha256.Size]
	}
	conn.SetReadDeadline(deadline)
	if _, err := io.ReadFull(r, in); err != nil {
		return 0, err
	}
	conn.SetReadDeadline(time.Time{})
	hs := in[:handshakeSize]
	if binary.BigEndian.Uint32(hs) != tcpMagic || hs[4] != tcpVersion {
		return 0, errors.New("not a raft handshake")
	}
	if len(t.keys) > 0 && !t.proven(nonce[:], hs, in[handshakeSize:]) {
		return 0, errBadProof
	}
	return binary.BigEndian.Uint64(hs[5:]), nil
}

// proven reports whether p is the proof of any of the keys. Every key is
// tried, so the time taken tells nothing of which matched.
func (t *TCPTransport) proven(nonce, hs, p []byte) bool {
	ok := false
	for _, k := range t.keys {
		if hmac.Equal(proof(k, nonce, hs), p) {
			ok = true
		}
	}
	return ok
}

// refuse logs a connection closed at its handshake: at warn for a wrong
// proof, at most once every warnEvery with the count since the last, and
// at debug otherwise.
func (t *TCPTransport) refuse(conn net.Conn, err error) {
	if !errors.Is(err, errBadProof) {
		t.opts.Logger.Debug("raft tcp transport: bad handshake", "remote", conn.RemoteAddr(), "err", err)
		return
	}
	t.mu.Lock()
	t.refused++
	n := t.refused
	warn := time.Since(t.warned) >= warnEvery
	if warn {
		t.warned, t.refused = time.Now(), 0
	}
	t.mu.Unlock()
	if warn {
		t.opts.Logger.Warn("raft tcp transport: refused a connection that holds no key of cluster.gossip_key_file",
			"remote", conn.RemoteAddr(), "refused", n)
	}
}
