package api

// Media across a cluster. Media lives in the store of the node it was
// uploaded through; the other nodes fetch it on demand. A node serves the
// media it holds to the other members on a route of its own
// (peerMediaPattern), answered from its own store only, never by asking
// further, so a fetch cannot loop. A download or thumbnail of a local media
// id this node does not hold asks the other ready members for it, one after
// another, and keeps the copy with the same record, so later reads are
// local. Media is not replicated through raft: entries of megabytes would
// stall the partitions' logs.

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"persona/cluster"
	"persona/media"
)

// peerMediaPattern is the route of the media a node holds, for the other
// members of its cluster.
const peerMediaPattern = "GET /_persona/cluster/v1/media/{mediaId}"

// mediaRecordHeader carries a media item's record (media.Meta as JSON,
// base64url without padding) in a peer's answer, whose body is the content.
const mediaRecordHeader = "X-Persona-Media-Record"

// memberRequestHeader marks a request one member passes on to another for
// a client (a PUT to an id the other reserved): it is answered from the
// receiver's own store, never passed on again. A client that sets it only
// gives up being passed on.
const memberRequestHeader = "X-Persona-Member-Request"

// peerTokenHeader carries a member's token (cluster.PeerTokens, label
// mediaKeyLabel) when the cluster has keys.
const (
	peerTokenHeader = "X-Persona-Peer-Token"
	mediaKeyLabel   = "persona cluster media peer v1"
)

// defaultMediaPeerTimeout is Options.MediaPeerTimeout's default.
const defaultMediaPeerTimeout = 10 * time.Second

// mediaPeers fetches media from the other members: one fetch of an id at a
// time, which the requests for it meanwhile share.
type mediaPeers struct {
	client  *http.Client
	timeout time.Duration // for one member's answer, beyond the wait for a pending upload
	tokens  []string      // the members' tokens of the cluster's keys, the one this node sends first; none without keys
	mu      sync.Mutex
	flights map[string]*flight
}

// flight is a fetch under way; err is set when done closes.
type flight struct {
	done chan struct{}
	err  error
}

func newMediaPeers(timeout time.Duration, keys [][]byte) *mediaPeers {
	if timeout <= 0 {
		timeout = defaultMediaPeerTimeout
	}
	// A transport of its own: members are reached directly, never through
	// a proxy the environment names.
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: timeout}).DialContext,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}
	return &mediaPeers{client: &http.Client{Transport: tr}, timeout: timeout, tokens: cluster.PeerTokens(keys, mediaKeyLabel),
		flights: map[string]*flight{}}
}

// orFromPeers runs read, a read of local media id; when this node does not
// hold id, it fetches id from the other members and runs read again. It
// answers read's result, or the fetch's failure: media.ErrNotFound when no
// member holds id, media.ErrNotYetUploaded when one holds it pending.
func (s *Server) orFromPeers(ctx context.Context, id string, wait time.Duration, read func() error) error {
	err := read()
	if !errors.Is(err, media.ErrNotFound) || s.cluster == nil {
		return err
	}
	if err := s.fetchMedia(ctx, id, wait); err != nil {
		return err
	}
	return read()
}

// fetchMedia fetches id from the other members and keeps it, or waits for
// the fetch of id under way. The request that fetches does so to the end
// even when its client goes (the others wait for it); each member's answer
// is bounded on its own.
func (s *Server) fetchMedia(ctx context.Context, id string, wait time.Duration) error {
	p := s.peers
	p.mu.Lock()
	if f, ok := p.flights[id]; ok {
		p.mu.Unlock()
		select {
		case <-f.done:
			return f.err
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", media.ErrBusy, ctx.Err())
		}
	}
	f := &flight{done: make(chan struct{})}
	p.flights[id] = f
	p.mu.Unlock()

	f.err = s.fetchFromMembers(context.WithoutCancel(ctx), id, wait)
	p.mu.Lock()
	delete(p.flights, id)
	p.mu.Unlock()
	close(f.done)
	return f.err
}

// fetchFromMembers asks each other ready member in turn for id, until one
// has it, and keeps the copy.
func (s *Server) fetchFromMembers(ctx context.Context, id string, wait time.Duration) error {
	found, result := media.ErrNotFound, "not_found"
	for _, m := range s.mediaMembers() {
		rec, body, err := s.askMember(ctx, m.APIAddr, id, wait)
		switch {
		case err == nil:
			if err := s.media.Keep(ctx, id, *rec, body); err != nil {
				s.log.Warn("keep media fetched from a member", "member", m.Name, "media_id", id, "err", err)
				continue
			}
			s.metrics.MediaMemberFetch("fetched")
			return nil
		case errors.Is(err, media.ErrNotYetUploaded):
			found, result = err, "not_yet_uploaded"
		case !errors.Is(err, media.ErrNotFound):
			s.log.Warn("fetch media from a member", "member", m.Name, "media_id", id, "err", err)
		}
	}
	s.metrics.MediaMemberFetch(result)
	return found
}

// mediaMembers lists the members to ask for media, by name: the others
// alive or suspect, ready, with an API address.
func (s *Server) mediaMembers() []cluster.Member {
	var out []cluster.Member
	for _, m := range s.cluster.Members() {
		up := m.State == cluster.StateAlive || m.State == cluster.StateSuspect
		if up && m.Ready && m.APIAddr != "" && m.MetaErr == nil && m.Name != s.cluster.Name() {
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b cluster.Member) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// askMember asks the member at addr for media id, waiting up to wait for a
// pending upload there. It fails with media.ErrNotFound or
// media.ErrNotYetUploaded as the member answers, or with what went wrong.
func (s *Server) askMember(ctx context.Context, addr, id string, wait time.Duration) (*media.Meta, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, s.peers.timeout+wait)
	defer cancel()
	u := url.URL{Scheme: "http", Host: addr, Path: "/_persona/cluster/v1/media/" + id,
		RawQuery: "timeout_ms=" + strconv.FormatInt(wait.Milliseconds(), 10)}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, nil, err
	}
	if len(s.peers.tokens) > 0 {
		req.Header.Set(peerTokenHeader, s.peers.tokens[0])
	}
	resp, err := s.peers.client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, nil, media.ErrNotFound
	case http.StatusGatewayTimeout:
		return nil, nil, media.ErrNotYetUploaded
	default:
		return nil, nil, fmt.Errorf("%s answered %s", addr, resp.Status)
	}
	var rec media.Meta
	raw, err := base64.RawURLEncoding.DecodeString(resp.Header.Get(mediaRecordHeader))
	if err == nil {
		err = json.Unmarshal(raw, &rec)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s sent a record it cannot be read: %w", addr, err)
	}
	limit := s.uploadLimit()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, nil, fmt.Errorf("read media from %s: %w", addr, err)
	}
	if int64(len(body)) > limit {
		return nil, nil, media.ErrTooLarge
	}
	return &rec, body, nil
}

// uploadToMember passes a PUT of body to a media id this node did not
// reserve on to the other members in turn, with the client's own access
// token, until one answers other than 404 (it reserved the id); its answer
// is the client's. No member reserved it: media.ErrNotFound.
func (s *Server) uploadToMember(r *http.Request, id string, body []byte) (any, error) {
	for _, m := range s.mediaMembers() {
		status, answer, err := s.putToMember(r, m.APIAddr, id, body)
		switch {
		case err != nil:
			s.log.Warn("pass an upload on to a member", "member", m.Name, "media_id", id, "err", err)
		case status == http.StatusOK:
			return struct{}{}, nil
		case status != http.StatusNotFound:
			return nil, s.mediaErr(memberError(status, answer))
		}
	}
	return nil, media.ErrNotFound
}

// putToMember sends the client's PUT r, with body, to the member at addr,
// marked as passed on; it returns the member's status and answer.
func (s *Server) putToMember(r *http.Request, addr, id string, body []byte) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), s.peers.timeout)
	defer cancel()
	u := url.URL{Scheme: "http", Host: addr, Path: "/_matrix/media/v3/upload/" + s.cfg.ServerName + "/" + id,
		RawQuery: url.Values{"filename": {r.URL.Query().Get("filename")}}.Encode()}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u.String(), bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+accessToken(r))
	req.Header.Set(memberRequestHeader, "1")
	if ct := r.Header.Get("Content-Type"); ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	resp, err := s.peers.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return 0, nil, fmt.Errorf("read the answer of %s: %w", addr, err)
	}
	return resp.StatusCode, answer, nil
}

// memberError is a member's Matrix error answer, to give the client as it
// is.
func memberError(status int, answer []byte) error {
	var e struct {
		Errcode string `json:"errcode"`
		Error   string `json:"error"`
	}
	if json.Unmarshal(answer, &e) != nil || e.Errcode == "" {
		return fmt.Errorf("a member answered an upload %d: %.200s", status, answer)
	}
	return errorf(status, e.Errcode, e.Error)
}

// peerMedia serves a member the media this node holds, from its store
// alone: GET /_persona/cluster/v1/media/{mediaId}?timeout_ms=. Only the
// members of the cluster are answered: requests from the host of an
// address a member gossips, carrying, when the cluster has keys, the
// token of one.
func (s *Server) peerMedia(r *http.Request) (any, error) {
	if s.cluster == nil {
		return nil, notFound("This node is not in a cluster.")
	}
	if !fromMember(s.cluster.Members(), r.RemoteAddr) ||
		(len(s.peers.tokens) > 0 && !cluster.ValidToken(r.Header.Get(peerTokenHeader), s.peers.tokens)) {
		return nil, forbidden("Only the members of the cluster fetch media here.")
	}
	id := r.PathValue("mediaId")
	if !mediaIDPattern.MatchString(id) {
		return nil, invalidParam("Invalid media ID.")
	}
	timeout, err := s.mediaTimeout(r)
	if err != nil {
		return nil, err
	}
	m, body, err := s.media.Get(r.Context(), id, timeout)
	if err != nil {
		return nil, s.mediaErr(err)
	}
	rec, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode the record of %s: %w", id, err)
	}
	return &peerFile{record: base64.RawURLEncoding.EncodeToString(rec), body: body}, nil
}

// peerFile is media as a member is answered: the record in a header, the
// content as the body.
type peerFile struct {
	record string
	body   []byte
}

func (f *peerFile) write(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set(mediaRecordHeader, f.record)
	h.Set("Content-Length", strconv.Itoa(len(f.body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(f.body)
}

// fromMember reports whether remoteAddr's host is the host of an address
// a member gossips (its membership, actor, raft or API address).
func fromMember(members []cluster.Member, remoteAddr string) bool {
	from, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return false
	}
	ip := from.Addr().Unmap()
	for _, m := range members {
		for _, a := range []string{m.Addr, m.ActorAddr, m.RaftAddr, m.APIAddr} {
			if host, _, err := net.SplitHostPort(a); err == nil {
				if h, err := netip.ParseAddr(host); err == nil && h.Unmap() == ip {
					return true
				}
			}
		}
	}
	return false
}
