package rooms

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"persona/actors"
	"persona/storage"
	"persona/wire"
)

// Transactions in: PUT /_matrix/federation/v1/send/{txnId}. A transaction
// is answered once per (origin, txnId): its answer is kept, and a resend
// gets it again without applying anything twice. Each PDU is checked
// (content hash, signatures) and handed to its room; a room that lacks the
// PDU's prev events gets them, or the state after them, from the origin
// first (gap.go). A bad PDU is reported in the answer and does not stop
// the others; a PDU refused only because an auth event it cites was
// refused before is answered as taken, as Synapse and Dendrite answer it:
// the fault is not the PDU's, and its sender can do nothing about it. Of
// the EDUs, profile updates refresh the profile cache; the others are
// dropped.

// Transaction limits of the spec.
const (
	maxPDUs = 50
	maxEDUs = 100
)

// transaction is the body of /send.
type transaction struct {
	Origin         string            `json:"origin"`
	OriginServerTS int64             `json:"origin_server_ts"`
	PDUs           []json.RawMessage `json:"pdus"`
	EDUs           []json.RawMessage `json:"edus"`
}

// pduResult is one PDU's outcome in the answer.
type pduResult struct {
	Error string `json:"error,omitempty"`
}

func (s *Service) send(r *http.Request, origin spec.ServerName) (any, error) {
	txnID := r.PathValue("txnID")
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "M_UNKNOWN", "Could not read the body.")
	}
	var t transaction
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&t); err != nil {
		return nil, errorf(http.StatusBadRequest, "M_BAD_JSON", "Bad transaction: %v", err)
	}
	if len(t.PDUs) > maxPDUs || len(t.EDUs) > maxEDUs {
		return nil, errorf(http.StatusBadRequest, "M_BAD_JSON", "A transaction holds at most %d PDUs and %d EDUs.", maxPDUs, maxEDUs)
	}
	key := txnKey(origin, txnID)
	if done, err := s.store.Get(key); err == nil {
		s.opts.Metrics.FederationTxnIn("duplicate")
		_, answer := txnAnswer(done)
		return json.RawMessage(answer), nil
	}
	results := s.receivePDUs(r.Context(), origin, t.PDUs)
	for _, raw := range t.EDUs {
		s.receiveEDU(origin, raw)
	}
	out, _ := json.Marshal(map[string]any{"pdus": results})
	var b storage.Batch
	b.Set(key, txnRecord(time.Now(), out))
	if err := s.store.CommitSync(&b); err != nil {
		return nil, err
	}
	s.opts.Metrics.FederationTxnIn("applied")
	return json.RawMessage(out), nil
}

// roomsAtOnce is how many rooms of one transaction take their PDUs at the
// same time: a room's PDUs go in order, one after the other, and rooms
// side by side let the store commit them together.
const roomsAtOnce = 16

// receivePDUs checks and delivers a transaction's PDUs, room by room in
// parallel and in order within a room, and answers the result of each.
func (s *Service) receivePDUs(ctx context.Context, origin spec.ServerName, pdus []json.RawMessage) map[string]pduResult {
	byRoom := map[string][]json.RawMessage{}
	var order []string
	for _, raw := range pdus {
		var head struct {
			RoomID string `json:"room_id"`
		}
		_ = json.Unmarshal(raw, &head)
		if _, ok := byRoom[head.RoomID]; !ok {
			order = append(order, head.RoomID)
		}
		byRoom[head.RoomID] = append(byRoom[head.RoomID], raw)
	}
	results := map[string]pduResult{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	slots := make(chan struct{}, roomsAtOnce)
	for _, room := range order {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer func() { <-slots; wg.Done() }()
			for _, raw := range byRoom[room] {
				id, err := s.receivePDU(ctx, origin, raw)
				if err != nil {
					s.opts.Metrics.FederationPDURejected(reasonOf(err))
				} else {
					s.opts.Metrics.FederationPDUAccepted()
				}
				if id == "" {
					s.log.Info("transaction PDU dropped", "origin", origin, "err", err)
					continue
				}
				mu.Lock()
				results[id] = pduResult{}
				if err != nil && reasonOf(err) != "auth_event" {
					results[id] = pduResult{Error: err.Error()}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return results
}

// rejection is why a PDU was refused, as a metric label.
type rejection struct {
	reason string
	err    error
}

func (r *rejection) Error() string { return r.err.Error() }
func (r *rejection) Unwrap() error { return r.err }

func reject(reason string, err error) error { return &rejection{reason, err} }

func reasonOf(err error) string {
	var r *rejection
	if errors.As(err, &r) {
		return r.reason
	}
	return "other"
}

// receivePDU checks one PDU and hands it to its room; it returns the
// event's id ("" when none could be computed) and why it was refused.
func (s *Service) receivePDU(ctx context.Context, origin spec.ServerName, raw []byte) (string, error) {
	var head struct {
		RoomID string `json:"room_id"`
	}
	if err := json.Unmarshal(raw, &head); err != nil || head.RoomID == "" {
		return "", reject("malformed", errors.New("no room_id"))
	}
	verImpl, err := s.roomVersion(ctx, head.RoomID)
	if err != nil {
		if id, held, err := s.receiveInvited(ctx, origin, head.RoomID, raw); held {
			return id, err
		}
		return "", reject("unknown_room", err)
	}
	ev, err := s.verify(ctx, verImpl, raw)
	if err != nil {
		if ev, perr := parseUntrusted(verImpl, raw); perr == nil {
			return ev.EventID(), reject("signature", err)
		}
		return "", reject("malformed", err)
	}
	prev := s.memberBefore(ctx, ev)
	if err := s.deliver(ctx, origin, verImpl, ev); err != nil {
		return ev.EventID(), err
	}
	s.memberChanged(ev, prev)
	return ev.EventID(), nil
}

// deliver hands a checked event to its room, filling first the gap before
// it that its room reports (gap.go). An event pushed to this server whose
// prev events stay missing is refused, as Synapse refuses it: the state at
// them would be the sender's word alone, and the event could become the
// room's only forward extremity on it.
func (s *Service) deliver(ctx context.Context, origin spec.ServerName, verImpl gomatrixserverlib.IRoomVersion, ev gomatrixserverlib.PDU) error {
	reply, err := s.receive(ctx, origin, ev)
	if err != nil {
		return err
	}
	if len(reply.Missing) > 0 {
		if err := s.fetchMissing(ctx, origin, verImpl, ev); err != nil {
			s.log.Info("get_missing_events failed", "origin", origin, "event", ev.EventID(), "err", describe(err))
		}
		if reply, err = s.receive(ctx, origin, ev); err != nil {
			return err
		}
	}
	switch {
	case reply.Rejected != "" && reply.AuthRejected:
		return reject("auth_event", errors.New(reply.Rejected))
	case reply.Rejected != "":
		return reject("auth", errors.New(reply.Rejected))
	case len(reply.Missing) > 0:
		return reject("missing_prev", errors.New("prev events unknown and not fetched"))
	}
	return nil
}

// receive hands ev, from origin, to its room and returns the room's answer.
func (s *Service) receive(ctx context.Context, origin spec.ServerName, ev gomatrixserverlib.PDU) (*wire.ReceiveReply, error) {
	room := ev.RoomID().String()
	return ask[*wire.ReceiveReply](ctx, s, actors.KindRoom, room, &wire.ReceivePDU{RoomId: room, Origin: string(origin), Pdu: ev.JSON(), EventId: ev.EventID()})
}
