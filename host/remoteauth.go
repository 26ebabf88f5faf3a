package host

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"log/slog"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/remote"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// With the cluster's keys (those of cluster.gossip_key_file), remote
// serves only calls that carry a peer token in their tokenHeader: the
// token of a key is HMAC-SHA256(key, actorKeyLabel), base64. A node sends
// the token of its first key and accepts that of any of its keys, so that
// keys rotate as memberlist's do.
//
// The token is static and travels in the clear (remote's gRPC has no
// TLS): whoever can read the traffic between two nodes can replay it.
// It keeps out those who can only reach cluster.actor_bind.
const (
	actorKeyLabel = "persona cluster actor peer v1"
	tokenHeader   = "persona-peer-token"
	warnEvery     = 10 * time.Second
)

// peerTokens returns the token of each key, in the same order (as
// cluster.PeerTokens does; host stands below cluster).
func peerTokens(keys [][]byte) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		m := hmac.New(sha256.New, k)
		m.Write([]byte(actorKeyLabel))
		out[i] = base64.StdEncoding.EncodeToString(m.Sum(nil))
	}
	return out
}

// remoteAuth returns remote's options: with keys, send the first key's
// token with every call and refuse a call without an accepted one; and
// always answer remote's unary calls (ListProcesses,
// GetProcessDiagnostics) Unimplemented, since protoactor's handlers of
// them panic, which would end the node on anyone's call.
func remoteAuth(keys [][]byte, log *slog.Logger) []remote.ConfigOption {
	if len(keys) == 0 {
		return []remote.ConfigOption{remote.WithServerOptions(grpc.UnaryInterceptor(refuseUnary))}
	}
	tokens := peerTokens(keys)
	c := &tokenCheck{tokens: tokens, log: log}
	return []remote.ConfigOption{
		remote.WithDialOptions(grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithPerRPCCredentials(peerToken(tokens[0]))),
		remote.WithServerOptions(grpc.UnaryInterceptor(c.unary), grpc.StreamInterceptor(c.stream)),
	}
}

// refuseUnary answers a unary call of remote's service: actors talk over
// its stream alone.
func refuseUnary(context.Context, any, *grpc.UnaryServerInfo, grpc.UnaryHandler) (any, error) {
	return nil, status.Error(codes.Unimplemented, "this node serves actor messages only")
}

// peerToken puts a token in the metadata of every call.
type peerToken string

func (t peerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{tokenHeader: string(t)}, nil
}

func (peerToken) RequireTransportSecurity() bool { return false }

// tokenCheck refuses a call whose token is none of tokens.
type tokenCheck struct {
	tokens []string
	log    *slog.Logger

	mu      sync.Mutex
	warned  time.Time // the last warning of a refused call
	refused int       // calls refused since
}

func (c *tokenCheck) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := c.admit(ctx); err != nil {
		return nil, err
	}
	return refuseUnary(ctx, req, info, handler)
}

func (c *tokenCheck) stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := c.admit(ss.Context()); err != nil {
		return err
	}
	return handler(srv, ss)
}

// admit returns an Unauthenticated error unless ctx's call carries an
// accepted token. Every token is compared, in constant time.
func (c *tokenCheck) admit(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	ok := false
	for _, got := range md.Get(tokenHeader) {
		for _, want := range c.tokens {
			if hmac.Equal([]byte(got), []byte(want)) {
				ok = true
			}
		}
	}
	if ok {
		return nil
	}
	c.mu.Lock()
	c.refused++
	n := c.refused
	warn := time.Since(c.warned) >= warnEvery
	if warn {
		c.warned, c.refused = time.Now(), 0
	}
	c.mu.Unlock()
	if warn {
		var from string
		if p, ok := peer.FromContext(ctx); ok {
			from = p.Addr.String()
		}
		c.log.Warn("refused a call to the actors from a node that holds no key of cluster.gossip_key_file",
			"remote", from, "refused", n)
	}
	return status.Error(codes.Unauthenticated, "no peer token of this cluster")
}
