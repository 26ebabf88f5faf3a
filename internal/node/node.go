// Package node assembles one persona node: storage, media, actors, with
// cluster.enabled the cluster membership, the Client-Server API, the
// federation listener and the metrics listener, started in that order and
// stopped in reverse; the node tells the cluster it is ready once all
// have started, and GET /ready answers 200 from then until Stop begins
// (health.go).
// `persona serve` and the end-to-end tests start nodes through it.
package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"persona/actors"
	"persona/api"
	"persona/cluster"
	"persona/cluster/replicas"
	"persona/config"
	"persona/federation"
	"persona/federation/outbox"
	"persona/federation/profiles"
	"persona/federation/rooms"
	"persona/host"
	"persona/media"
	"persona/metrics"
	"persona/storage"
)

// Node is a running persona node.
type Node struct {
	cfg       *config.Config
	log       *slog.Logger
	store     *storage.Store
	host      *actors.Service
	client    *http.Server
	metricsLn *http.Server
	clientLn  net.Listener
	conns     *conns   // the client listener's connections
	peerKeys  [][]byte // the cluster's keys (cluster.gossip_key_file); nil outside a cluster or without
	metricsL  net.Listener
	fed       *federation.Server
	outbox    *outbox.Service
	rooms     *rooms.Service
	profiles  *profiles.Cache
	fedL      net.Listener
	metrics   *metrics.Metrics
	members   *cluster.Membership
	placement *follower
	owners    *owners      // the host's placement in a cluster; nil outside one, or in a race build
	peers     *peers       // the host's peers in a cluster, as owners
	repl      *replication // the partitions' raft groups shared with other nodes; nil outside a cluster
	left      bool         // leaveCluster ran
	done      chan error
	stopOnce  sync.Once
	stopErr   error
	phase     atomic.Int32          // phaseStarting, phaseServing or phaseStopping
	failure   atomic.Pointer[error] // the first listener that stopped on its own
	// beforeClose, when set, runs in Stop once the node answers not
	// ready, before it leaves the cluster and closes its listeners.
	beforeClose func()
}

// Start opens the data directory, starts the actors and listens on the
// configured addresses (port 0 picks a free port; see ClientAddr).
func Start(cfg *config.Config, log *slog.Logger) (*Node, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	secret, err := sharedSecret(cfg)
	if err != nil {
		return nil, err
	}
	var m *metrics.Metrics
	sopts := storage.Options{Logger: log, OnRound: func(b, o int, w, s time.Duration) { m.CommitRound(b, o, w, s) }}
	var st *storage.Store
	var repl *replication
	if cfg.Cluster.Enabled {
		st, repl, err = openReplicated(cfg.DataDir, sopts, cfg, log)
	} else {
		st, err = openStore(cfg.DataDir, sopts, cfg.Storage.CommitPath == "raft", cfg.Actors.Partitions, log)
	}
	if err != nil {
		return nil, err
	}
	md, err := media.New(st, media.Options{MaxUploadBytes: cfg.Limits.MaxUploadBytes, Log: log})
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	n := &Node{cfg: cfg, log: log, store: st, repl: repl, done: make(chan error, 3)}
	m = metrics.New(st)
	m.Ready(n.ready)
	n.metrics = m
	var opts actors.Options
	if cfg.Listen.Federation != "" {
		if opts, err = n.newFederation(m); err != nil {
			_ = st.Close()
			return nil, err
		}
	}
	if cfg.Cluster.Enabled && !raceBuild {
		n.owners = &owners{lease: func(p int) bool { return repl.path.d.LeaseValid(replicas.Group(p)) }}
		opts.Host.Placement = n.owners
		n.peers = &peers{}
		opts.Host.Peers = n.peers
	}
	if n.host, err = actors.NewWith(st, cfg, m, log, opts); err != nil {
		_ = st.Close()
		return nil, err
	}
	var remote api.Remote
	var ob api.Outbox
	if n.fed != nil {
		n.outbox.Attach(n.host.Runtime())
		if err := n.outbox.Resume(); err != nil {
			n.stopCore()
			return nil, err
		}
		n.profiles, err = profiles.New(profiles.Options{Store: st, Client: n.fed.Client(), Identity: n.fed.Identity(),
			TTL: cfg.Federation.ProfileCacheTTL, ErrorTTL: cfg.Federation.ProfileCacheErrorTTL, Metrics: m, Log: log})
		if err != nil {
			n.stopCore()
			return nil, err
		}
		n.rooms = rooms.New(rooms.Options{Config: cfg, Actors: n.host, Server: n.fed, Store: st, Metrics: m, Log: log, Profiles: n.profiles})
		remote, ob = n.rooms, n.outbox
	}
	// The client listener is bound before the node joins a cluster, which
	// is told its address (the others fetch media there); it serves once
	// the API is built.
	if n.clientLn, err = net.Listen("tcp", cfg.Listen.Client); err != nil {
		n.stopCore()
		return nil, fmt.Errorf("listen.client %s: %w", cfg.Listen.Client, err)
	}
	var members api.Cluster
	if cfg.Cluster.Enabled {
		if err := n.startCluster(); err != nil {
			_ = n.clientLn.Close()
			n.stopCore()
			return nil, err
		}
		members = n.members
	}
	srv := api.New(api.Options{Config: cfg, Host: n.host, Media: md, Metrics: m, Log: log, SharedSecret: secret, PeerKeys: n.peerKeys,
		Remote: remote, Outbox: ob, Cluster: members, Probes: n})

	n.client = &http.Server{Handler: n.closingWhileStopping(srv), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	n.conns = &conns{open: map[net.Conn]connState{}}
	n.client.ConnState = n.conns.track
	n.client.RegisterOnShutdown(n.conns.closeFresh)
	go n.serve(n.client, n.clientLn)
	if cfg.Listen.Federation != "" {
		if err := n.startFederation(m); err != nil {
			_ = n.client.Close()
			n.stopCore()
			return nil, err
		}
	}
	if cfg.Listen.Metrics != "" {
		if n.metricsL, err = net.Listen("tcp", cfg.Listen.Metrics); err != nil {
			_ = n.client.Close()
			n.closeFederation()
			n.stopCore()
			return nil, fmt.Errorf("listen.metrics %s: %w", cfg.Listen.Metrics, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", m.Handler())
		api.ProbeRoutes(mux, n, true)
		mux.HandleFunc("GET /debug/pprof/", pprof.Index) // the metrics listener is for operators
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
		n.metricsLn = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go n.serve(n.metricsLn, n.metricsL)
	}
	if n.members != nil {
		n.followPlacement()
	}
	n.phase.Store(phaseServing)
	log.Info("persona node started", "server_name", cfg.ServerName, "client", n.ClientAddr(),
		"federation", n.FederationAddr(), "metrics", n.MetricsAddr(), "cluster", n.ClusterName(), "data_dir", cfg.DataDir)
	return n, nil
}

// startCluster joins the cluster as cluster.* says, not ready yet.
func (n *Node) startCluster() error {
	c := n.cfg.Cluster
	keys, err := c.GossipKeys()
	if err != nil {
		return fmt.Errorf("cluster.gossip_key_file: %w", err)
	}
	n.peerKeys = keys
	if keys == nil {
		n.log.Warn("cluster.gossip_key_file is empty: membership gossip travels in the clear, and raft_bind, actor_bind " +
			"and the members' media route take any peer that reaches them; set a key file unless every address is private to the cluster")
	}
	n.members, err = cluster.Start(cluster.Options{Name: n.repl.name, Bind: c.Bind, Advertise: c.Advertise, Join: c.Join,
		Partitions: c.Partitions, Local: cluster.Meta{ActorAddr: c.ActorBind, RaftAddr: n.repl.raftAddr(c.RaftBind), APIAddr: n.ClientAddr(),
			Followed: n.repl.heldPartitions(c.Partitions)}, // seen holding them, the cluster is founded
		Keys: keys, Metrics: n.metrics, Log: n.log})
	if err != nil {
		return err
	}
	n.repl.startReplicas(n.members, n.cfg, n)
	if n.owners == nil {
		n.log.Warn("built with -race: protoactor's remote is not started, and this node owns every partition itself")
		return nil
	}
	n.peers.members.Store(n.members)
	// The others reach this node's actors at the address it gossips,
	// holding a key of the same file.
	if err := n.host.Runtime().StartRemote(c.ActorBind, n.members.Local().ActorAddr, keys); err != nil {
		_ = n.members.Shutdown()
		n.members = nil
		return fmt.Errorf("cluster.actor_bind: %w", err)
	}
	return nil
}

// leaveTimeout bounds how long Stop waits for the cluster to hear this
// node leave.
const leaveTimeout = 5 * time.Second

// leaveCluster leaves the cluster, if in one, and stops the membership;
// again, it does nothing. It hands the node's leaderships over first, then
// waits until open (the time the listeners stay open to, at least; zero
// for none) or ctx's end, following the partitions' owners meanwhile.
func (n *Node) leaveCluster(ctx context.Context, open time.Time) error {
	if n.members == nil || n.left {
		return nil
	}
	n.left = true
	timeout := leaveTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	// The hand-over may take the open time as well as its own: a node
	// that leaves while it still leads keeps its groups from electing
	// until it exits, and the others route nothing to a node that left.
	drainCtx, cancel := context.WithTimeout(ctx, max(time.Until(open), 0)+timeout)
	n.repl.drain(drainCtx) // the partitions it leads are served elsewhere before it goes
	cancel()
	if wait := time.Until(open); wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	n.stopPlacement()
	err := n.members.Leave(timeout)
	if e := n.members.Shutdown(); err == nil {
		err = e
	}
	return err
}

// newFederation loads the server's identity and makes the federation
// server and the outbox; it answers the actors' options that run the
// outbox's actors and sign with the server's key.
func (n *Node) newFederation(m *metrics.Metrics) (actors.Options, error) {
	o := federation.OptionsFrom(n.cfg)
	o.Store, o.Metrics, o.Log = n.store, m, n.log
	fed, err := federation.New(o)
	if err != nil {
		return actors.Options{}, err
	}
	f := n.cfg.Federation
	ob, err := outbox.New(n.store, outbox.Options{Origin: spec.ServerName(n.cfg.ServerName), Client: fed.Client(),
		BackoffMin: f.OutboxBackoffMin, BackoffMax: f.OutboxBackoffMax, Horizon: f.OutboxHorizon, Metrics: m, Log: n.log})
	if err != nil {
		return actors.Options{}, err
	}
	n.fed, n.outbox = fed, ob
	id := fed.Identity()
	return actors.Options{Kinds: []host.Kind{ob.Kind()}, Signing: actors.Signing{KeyID: string(id.KeyID), Key: id.PrivateKey}}, nil
}

// startFederation listens on listen.federation and serves federation
// requests over TLS.
func (n *Node) startFederation(_ *metrics.Metrics) error {
	var err error
	if n.fedL, err = net.Listen("tcp", n.cfg.Listen.Federation); err != nil {
		return fmt.Errorf("listen.federation %s: %w", n.cfg.Listen.Federation, err)
	}
	go func() {
		if err := n.fed.Serve(n.fedL); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.noteFailure(err)
		}
	}()
	return nil
}

// closeFederation stops the federation listener at once, if started.
func (n *Node) closeFederation() {
	if n.fed != nil {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = n.fed.Shutdown(ctx)
	}
}

func (n *Node) serve(s *http.Server, l net.Listener) {
	if err := s.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) && !n.closedByStop(err) {
		n.noteFailure(err)
	}
}

// ClientAddr is the address the Client-Server API listens on.
func (n *Node) ClientAddr() string { return n.clientLn.Addr().String() }

// FederationAddr is the address the federation listener listens on, or ""
// when federation is disabled.
func (n *Node) FederationAddr() string {
	if n.fedL == nil {
		return ""
	}
	return n.fedL.Addr().String()
}

// Cluster returns the node's cluster membership, or nil when
// cluster.enabled is false.
func (n *Node) Cluster() *cluster.Membership { return n.members }

// ClusterName is the node's name in the cluster, or "" outside one.
func (n *Node) ClusterName() string {
	if n.members == nil {
		return ""
	}
	return n.members.Name()
}

// Federation returns the node's federation server (its identity, key ring,
// client and routes), or nil when federation is disabled.
func (n *Node) Federation() *federation.Server { return n.fed }

// Metrics is the node's collectors, for an in-process reader such as a
// benchmark.
func (n *Node) Metrics() *metrics.Metrics { return n.metrics }

// MetricsAddr is the address of /metrics, or "" when disabled.
func (n *Node) MetricsAddr() string {
	if n.metricsL == nil {
		return ""
	}
	return n.metricsL.Addr().String()
}

// Failed reports a listener that stopped on its own.
func (n *Node) Failed() <-chan error { return n.done }

// Stop turns the node not ready (GET /ready answers 503 "stopping", so
// that a load balancer stops sending it traffic, and each answer closes
// its connection), leaves the cluster (if in one: it hands its partitions'
// leadership over, keeps answering until cluster.drain_delay has passed
// since it turned not ready, then the others list it as left, not
// failed), stops accepting connections, lets the requests in flight and
// on their way finish (up to ctx), then stops the actors and closes
// storage.
// Stop is idempotent.
func (n *Node) Stop(ctx context.Context) error {
	n.stopOnce.Do(func() {
		n.phase.Store(phaseStopping)
		open := time.Now().Add(n.cfg.Cluster.DrainDelay)
		if n.beforeClose != nil {
			n.beforeClose()
		}
		if err := n.leaveCluster(ctx, open); err != nil {
			n.log.Warn("leave the cluster", "err", err)
		}
		n.stopErr = n.closeClient(ctx)
		if n.fed != nil {
			if e := n.fed.Shutdown(ctx); n.stopErr == nil {
				n.stopErr = e
			}
		}
		if n.metricsLn != nil {
			_ = n.metricsLn.Shutdown(ctx)
		}
		if e := n.stopCore(); n.stopErr == nil {
			n.stopErr = e
		}
	})
	return n.stopErr
}

func (n *Node) stopCore() error {
	if err := n.leaveCluster(context.Background(), time.Time{}); err != nil {
		n.log.Warn("leave the cluster", "err", err)
	}
	if n.rooms != nil {
		n.rooms.Close()
	}
	if n.host != nil {
		n.host.Stop()
	}
	if n.outbox != nil {
		n.outbox.Close()
	}
	if n.profiles != nil {
		n.profiles.Close()
	}
	return n.store.Close()
}

// sharedSecret is registration.shared_secret, or the one stored in the data
// directory, made on first start.
func sharedSecret(cfg *config.Config) (string, error) {
	if cfg.Registration.SharedSecret != "" {
		return cfg.Registration.SharedSecret, nil
	}
	path := cfg.SharedSecretPath()
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read shared secret: %w", err)
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	secret := hex.EncodeToString(b)
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write shared secret: %w", err)
	}
	return secret, nil
}

// SharedSecret reads the registration secret a node uses (for the CLI).
func SharedSecret(cfg *config.Config) (string, error) {
	if cfg.Registration.SharedSecret != "" {
		return cfg.Registration.SharedSecret, nil
	}
	b, err := os.ReadFile(cfg.SharedSecretPath())
	if err != nil {
		return "", fmt.Errorf("no registration.shared_secret in the config and none in %s (start the node once): %w", cfg.SharedSecretPath(), err)
	}
	return strings.TrimSpace(string(b)), nil
}
