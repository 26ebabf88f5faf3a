// Package rooms is the server-server API's room protocol on persona's
// actors: transactions of PDUs from other servers, the join and leave
// handshakes both as the resident server and as the joining one, the reads
// a peer fills gaps with (event, state, auth chain, backfill, missing
// events), and the profile and directory queries. Network calls happen
// here, never in an actor: a room says what it lacks, and this package
// fetches it and hands it back.
package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"google.golang.org/protobuf/proto"

	"persona/actors"
	"persona/config"
	"persona/federation"
	"persona/federation/profiles"
	"persona/internal/mxid"
	"persona/metrics"
	"persona/storage"
	"persona/wire"
)

// Options configure the room protocol.
type Options struct {
	Config  *config.Config
	Actors  *actors.Service
	Server  *federation.Server
	Store   *storage.Store
	Metrics *metrics.Metrics
	Log     *slog.Logger
	// Profiles is the cache of other servers' users' profiles: Profile
	// reads it, member events from other servers refresh it. nil: no
	// remote profiles.
	Profiles *profiles.Cache
	// RequestTimeout bounds one call to another server.
	RequestTimeout time.Duration
}

// Service serves the room protocol and joins rooms on other servers.
type Service struct {
	opts   Options
	cfg    *config.Config
	actors *actors.Service
	fed    *federation.Server
	store  *storage.Store
	log    *slog.Logger

	versions sync.Map    // room id -> gomatrixserverlib.IRoomVersion: a room's version never changes
	announce *announcer  // local profile changes to tell other servers
	met      atomic.Bool // another server's key is stored (federated)

	stopSweep func()        // ends sweepTxns
	swept     chan struct{} // closed when sweepTxns returns
}

// New registers the room protocol's routes on o.Server and starts the
// goroutines that announce local profile changes and sweep expired
// transaction records; Close stops them.
func New(o Options) *Service {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = 30 * time.Second
	}
	s := &Service{opts: o, cfg: o.Config, actors: o.Actors, fed: o.Server, store: o.Store, log: o.Log}
	s.announce = newAnnouncer(s)
	ctx, stop := context.WithCancel(context.Background())
	s.stopSweep, s.swept = stop, make(chan struct{})
	go s.sweepTxns(ctx, s.swept)
	h := func(f func(*http.Request, spec.ServerName) (any, error)) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			out, err := f(r, federation.Origin(r.Context()))
			if err != nil {
				writeError(w, err)
				return
			}
			writeJSON(w, http.StatusOK, out)
		})
	}
	const v1, v2 = "/_matrix/federation/v1", "/_matrix/federation/v2"
	srv := o.Server
	srv.Handle("PUT "+v1+"/send/{txnID}", h(s.send))
	srv.Handle("GET "+v1+"/make_join/{roomID}/{userID}", h(s.makeJoin))
	srv.Handle("PUT "+v2+"/send_join/{roomID}/{eventID}", h(s.sendJoin))
	srv.Handle("PUT "+v1+"/send_join/{roomID}/{eventID}", h(s.sendJoinV1))
	srv.Handle("GET "+v1+"/make_leave/{roomID}/{userID}", h(s.makeLeave))
	srv.Handle("PUT "+v2+"/send_leave/{roomID}/{eventID}", h(s.sendLeave))
	srv.Handle("PUT "+v1+"/send_leave/{roomID}/{eventID}", h(s.sendLeaveV1))
	srv.Handle("PUT "+v2+"/invite/{roomID}/{eventID}", h(s.inviteV2))
	srv.Handle("GET "+v1+"/event/{eventID}", h(s.event))
	srv.Handle("GET "+v1+"/state/{roomID}", h(s.read("state")))
	srv.Handle("GET "+v1+"/state_ids/{roomID}", h(s.read("state_ids")))
	srv.Handle("GET "+v1+"/event_auth/{roomID}/{eventID}", h(s.read("event_auth")))
	srv.Handle("GET "+v1+"/backfill/{roomID}", h(s.read("backfill")))
	srv.Handle("POST "+v1+"/get_missing_events/{roomID}", h(s.read("missing")))
	srv.Handle("GET "+v1+"/query/profile", h(s.queryProfile))
	srv.Handle("GET "+v1+"/query/directory", h(s.queryDirectory))
	return s
}

// matrixError is an answer other than 200.
type matrixError struct {
	status  int
	errcode string
	msg     string
	cause   *wire.Error // an actor's refusal, for callers that map it themselves
}

func (e *matrixError) Error() string { return e.errcode + ": " + e.msg }

// Unwrap is the actor's error behind e, if any.
func (e *matrixError) Unwrap() error {
	if e.cause == nil {
		return nil
	}
	return e.cause
}

func errorf(status int, errcode, format string, args ...any) error {
	return &matrixError{status: status, errcode: errcode, msg: fmt.Sprintf(format, args...)}
}

// fromWire is an actor's error as the server-server API answers it.
func fromWire(e *wire.Error) error {
	out := &matrixError{status: http.StatusInternalServerError, errcode: "M_UNKNOWN", msg: e.Error(), cause: e}
	switch e.Kind {
	case wire.Error_NOT_FOUND:
		out.status, out.errcode = http.StatusNotFound, "M_NOT_FOUND"
	case wire.Error_FORBIDDEN:
		out.status, out.errcode = http.StatusForbidden, "M_FORBIDDEN"
	case wire.Error_MALFORMED, wire.Error_BAD_VALUE:
		out.status, out.errcode = http.StatusBadRequest, "M_BAD_JSON"
	}
	return out
}

func writeError(w http.ResponseWriter, err error) {
	var inc *incompatible
	if errors.As(err, &inc) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"errcode": "M_INCOMPATIBLE_ROOM_VERSION",
			"error": "Your server does not support the room's version.", "room_version": inc.version})
		return
	}
	var me *matrixError
	if !errors.As(err, &me) {
		me = &matrixError{status: http.StatusInternalServerError, errcode: "M_UNKNOWN", msg: err.Error()}
	}
	writeJSON(w, me.status, map[string]string{"errcode": me.errcode, "error": me.msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"errcode":"M_UNKNOWN","error":"Internal server error."}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// ask sends an actor a request and answers its reply as T, or the reply's
// error.
func ask[T interface {
	proto.Message
	GetError() *wire.Error
}](ctx context.Context, s *Service, kind, id string, msg proto.Message) (T, error) {
	var zero T
	reply, err := s.actors.Request(ctx, kind, id, msg)
	if err != nil {
		return zero, err
	}
	out, ok := reply.(T)
	if !ok {
		if d, isDone := reply.(*wire.Done); isDone && d.Error != nil {
			return zero, fromWire(d.Error)
		}
		return zero, fmt.Errorf("%T answered %T", msg, reply)
	}
	if e := out.GetError(); e != nil {
		return zero, fromWire(e)
	}
	return out, nil
}

// roomVersion is a room's version here, or a 404 for a room this server
// is not in.
func (s *Service) roomVersion(ctx context.Context, room string) (gomatrixserverlib.IRoomVersion, error) {
	if v, ok := s.versions.Load(room); ok {
		return v.(gomatrixserverlib.IRoomVersion), nil
	}
	reply, err := ask[*wire.RoomVersionReply](ctx, s, actors.KindRoom, room, &wire.GetRoomVersion{RoomId: room})
	if err != nil {
		return nil, err
	}
	if reply.RoomVersion == "" || reply.InvitedOnly {
		return nil, errorf(http.StatusNotFound, "M_NOT_FOUND", "Unknown room %s.", room)
	}
	v, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(reply.RoomVersion))
	if err == nil {
		s.versions.Store(room, v)
	}
	return v, err
}

// userIDForSender maps a sender to its user id: the same in the room
// versions persona speaks.
func userIDForSender(_ spec.RoomID, s spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(s), true)
}

// parseUntrusted parses a PDU of another server. An event over a size
// limit that its room version counts in codepoints, not bytes (versions
// before 11), is taken: rooms hold such events, and refusing them would
// break the rooms.
func parseUntrusted(verImpl gomatrixserverlib.IRoomVersion, raw []byte) (gomatrixserverlib.PDU, error) {
	ev, err := verImpl.NewEventFromUntrustedJSON(raw)
	var invalid gomatrixserverlib.EventValidationError
	if errors.As(err, &invalid) && invalid.Persistable && ev != nil {
		return ev, nil
	}
	return ev, err
}

// verify parses a PDU of a room of version verImpl and checks its content
// hash and its signatures.
func (s *Service) verify(ctx context.Context, verImpl gomatrixserverlib.IRoomVersion, raw []byte) (gomatrixserverlib.PDU, error) {
	ev, err := parseUntrusted(verImpl, raw)
	if err != nil {
		return nil, fmt.Errorf("malformed event: %w", err)
	}
	if ev.Redacted() && !sameContent(raw, ev.Content()) {
		return nil, errors.New("the content hash does not match the event")
	}
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, ev, s.fed.KeyRing(), userIDForSender); err != nil {
		return nil, fmt.Errorf("signatures: %w", err)
	}
	return ev, nil
}

// verifySender is verify for an invite on its way to the invitee's
// server, which holds only its sender's signature yet.
func (s *Service) verifySender(ctx context.Context, verImpl gomatrixserverlib.IRoomVersion, raw []byte) (gomatrixserverlib.PDU, error) {
	ev, err := verImpl.NewEventFromUntrustedJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("malformed event: %w", err)
	}
	if ev.Redacted() && !sameContent(raw, ev.Content()) {
		return nil, errors.New("the content hash does not match the event")
	}
	redacted, err := verImpl.RedactEventJSON(ev.JSON())
	if err != nil {
		return nil, err
	}
	res, err := s.fed.KeyRing().VerifyJSONs(ctx, []gomatrixserverlib.VerifyJSONRequest{{
		ServerName: spec.ServerName(mxid.ServerOf(string(ev.SenderID()))), AtTS: ev.OriginServerTS(), Message: redacted,
		ValidityCheckingFunc: gomatrixserverlib.StrictValiditySignatureCheck,
	}})
	if err != nil {
		return nil, fmt.Errorf("signatures: %w", err)
	}
	if res[0].Error != nil {
		return nil, fmt.Errorf("signatures: %w", res[0].Error)
	}
	return ev, nil
}

// sameContent reports whether raw's content is content.
func sameContent(raw, content []byte) bool {
	var ev struct {
		Content json.RawMessage `json:"content"`
	}
	if json.Unmarshal(raw, &ev) != nil {
		return false
	}
	a, err1 := gomatrixserverlib.CanonicalJSON(ev.Content)
	b, err2 := gomatrixserverlib.CanonicalJSON(content)
	return err1 == nil && err2 == nil && string(a) == string(b)
}
