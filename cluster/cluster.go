// Package cluster holds a persona node's view of its cluster: which nodes
// there are, whether each is alive, suspect, dead or gone, and what each
// says about itself (its actor system's address, the partitions it leads
// and follows, whether it is ready). Membership runs hashicorp/memberlist
// (SWIM gossip and failure detection) and gossips that metadata; placement
// and replication read it through Members and Subscribe. The package
// touches no storage and no actor.
package cluster

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"persona/metrics"
)

// Options configure a Membership.
type Options struct {
	// Name is the node's name, unique in the cluster; "" names it after
	// the host and the bound port ("host-7946").
	Name string
	// Bind is the IP:port memberlist listens on, TCP and UDP; port 0
	// picks a free port.
	Bind string
	// Advertise is the IP:port other nodes reach this one at; "" is Bind's
	// address and bound port (a private address of the machine when Bind's
	// address is 0.0.0.0).
	Advertise string
	// Join lists the host:port of members to join at start; none starts a
	// new cluster. While the node is alone it joins them again every Rejoin.
	Join []string
	// Partitions is the number of partitions of the cluster, which the
	// metadata's partition sets are encoded for.
	Partitions int
	// Local is the metadata the node starts with. An ActorAddr, RaftAddr
	// or APIAddr whose host is empty or unspecified (0.0.0.0, ::) takes
	// the advertised address.
	Local Meta
	// Keys encrypt gossip (AES-GCM; 16, 24 or 32 bytes each): the first
	// encrypts, each decrypts. None gossips in the clear.
	Keys [][]byte

	// ProbeInterval is how often the node probes one other member; a
	// member is found unresponsive within about one interval. Shorter
	// finds failures sooner at the cost of more traffic.
	ProbeInterval time.Duration
	// ProbeTimeout is how long a probe waits for its ack before asking
	// other members to probe indirectly; it must exceed the round trip.
	ProbeTimeout time.Duration
	// SuspicionMult scales how long a suspect member has to refute the
	// suspicion (SuspicionMult × ProbeInterval × log10 of the cluster's
	// size, at least ×1) before it is declared dead. Lower declares
	// failures sooner and is more often wrong about a slow node.
	SuspicionMult int
	// GossipInterval is how often the node gossips what changed.
	GossipInterval time.Duration
	// PushPullInterval is how often the node exchanges its whole view with
	// another member, which repairs anything gossip missed.
	PushPullInterval time.Duration

	// Rejoin is how often a node alone joins its seeds again, and how often
	// a node tries to reach one member it declared dead (which merges the
	// two sides of a healed network partition).
	Rejoin time.Duration
	// Refresh is how often the view's metrics are set again and members
	// gone longer than Forget are dropped.
	Refresh time.Duration
	// Forget is how long a dead or left member stays listed.
	Forget time.Duration
	// BroadcastTimeout bounds how long SetLocal waits for its update to
	// be gossiped.
	BroadcastTimeout time.Duration

	// Metrics counts events and members by state; nil counts nothing.
	Metrics *metrics.Metrics
	// Log receives memberlist's log and the membership's own; nil discards.
	Log *slog.Logger
}

// DefaultOptions returns the defaults of the options not configured: the
// timings are memberlist's LAN defaults.
func DefaultOptions() Options {
	lan := memberlist.DefaultLANConfig()
	return Options{
		Bind:             "127.0.0.1:7946",
		Partitions:       64,
		ProbeInterval:    lan.ProbeInterval,
		ProbeTimeout:     lan.ProbeTimeout,
		SuspicionMult:    lan.SuspicionMult,
		GossipInterval:   lan.GossipInterval,
		PushPullInterval: lan.PushPullInterval,
		Rejoin:           5 * time.Second,
		Refresh:          time.Second,
		Forget:           24 * time.Hour,
		BroadcastTimeout: 5 * time.Second,
	}
}

// withDefaults returns o with every zero field set to its default.
func (o Options) withDefaults() Options {
	d := DefaultOptions()
	o.Bind = cmp.Or(o.Bind, d.Bind)
	o.Partitions = cmp.Or(o.Partitions, d.Partitions)
	o.ProbeInterval = cmp.Or(o.ProbeInterval, d.ProbeInterval)
	o.ProbeTimeout = cmp.Or(o.ProbeTimeout, d.ProbeTimeout)
	o.SuspicionMult = cmp.Or(o.SuspicionMult, d.SuspicionMult)
	o.GossipInterval = cmp.Or(o.GossipInterval, d.GossipInterval)
	o.PushPullInterval = cmp.Or(o.PushPullInterval, d.PushPullInterval)
	o.Rejoin = cmp.Or(o.Rejoin, d.Rejoin)
	o.Refresh = cmp.Or(o.Refresh, d.Refresh)
	o.Forget = cmp.Or(o.Forget, d.Forget)
	o.BroadcastTimeout = cmp.Or(o.BroadcastTimeout, d.BroadcastTimeout)
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o
}

// validate names every option that cannot work.
func (o Options) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("cluster: "+format, args...)) }
	if _, err := netip.ParseAddrPort(o.Bind); err != nil {
		bad("Bind = %q, want IP:port", o.Bind)
	}
	if o.Advertise != "" {
		if ap, err := netip.ParseAddrPort(o.Advertise); err != nil || ap.Port() == 0 {
			bad("Advertise = %q, want IP:port with a port 1-65535", o.Advertise)
		}
	}
	for _, seed := range o.Join {
		if _, port, err := net.SplitHostPort(seed); err != nil || port == "" {
			bad("Join has %q, want host:port", seed)
		}
	}
	if o.Partitions < 1 {
		bad("Partitions = %d, want >= 1", o.Partitions)
	}
	for _, k := range o.Keys {
		if err := memberlist.ValidateKey(k); err != nil {
			bad("a key of %d bytes: %v", len(k), err)
		}
	}
	for name, d := range map[string]time.Duration{"ProbeInterval": o.ProbeInterval, "ProbeTimeout": o.ProbeTimeout,
		"GossipInterval": o.GossipInterval, "PushPullInterval": o.PushPullInterval, "Rejoin": o.Rejoin,
		"Refresh": o.Refresh, "Forget": o.Forget, "BroadcastTimeout": o.BroadcastTimeout} {
		if d <= 0 {
			bad("%s = %v, want > 0", name, d)
		}
	}
	if o.ProbeTimeout >= o.ProbeInterval {
		bad("ProbeTimeout = %v, want less than ProbeInterval (%v)", o.ProbeTimeout, o.ProbeInterval)
	}
	if o.SuspicionMult < 1 {
		bad("SuspicionMult = %d, want >= 1", o.SuspicionMult)
	}
	return errors.Join(errs...)
}

// Membership is this node's membership of the cluster.
type Membership struct {
	opts  Options
	log   *slog.Logger
	name  string
	addr  string // advertised host:port
	ml    *memberlist.Memberlist
	inbox *inbox
	view  *view

	mu    sync.Mutex
	local Meta
	meta  []byte // local encoded
	left  bool   // Leave or Shutdown was called
	shut  bool   // Shutdown was called

	updateMu sync.Mutex // UpdateLocal's, one at a time

	stop chan struct{}
	wg   sync.WaitGroup
}

// ErrLeft is the error of SetLocal, Leave and Subscribe once the node left
// or shut down.
var ErrLeft = errors.New("cluster: this node left the cluster")

// Start binds memberlist's listeners, joins the members of o.Join that
// answer (the others are tried again in the background while the node is
// alone) and starts following the cluster.
func Start(o Options) (*Membership, error) {
	o = o.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	m := &Membership{opts: o, log: o.Log.With("component", "cluster"), inbox: newInbox(), stop: make(chan struct{})}
	logger := memberlistLogger(o.Log, m.onLogLine)
	bind := netip.MustParseAddrPort(o.Bind)
	tr, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{bind.Addr().String()}, BindPort: int(bind.Port()), Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("cluster: bind %s: %w", o.Bind, err)
	}
	port := tr.GetAutoBindPort()
	advHost, advPort := "", port
	if o.Advertise != "" {
		ap := netip.MustParseAddrPort(o.Advertise)
		advHost, advPort = ap.Addr().String(), int(ap.Port())
	}
	advIP, advPort, err := tr.FinalAdvertiseAddr(advHost, advPort)
	if err != nil {
		_ = tr.Shutdown()
		return nil, fmt.Errorf("cluster: advertise address: %w", err)
	}
	m.addr = net.JoinHostPort(advIP.String(), strconv.Itoa(advPort))
	m.name = o.Name
	if m.name == "" {
		host, err := os.Hostname()
		if err != nil {
			_ = tr.Shutdown()
			return nil, fmt.Errorf("cluster: name the node after its host: %w", err)
		}
		m.name = host + "-" + strconv.Itoa(port)
	}
	m.local = withActorHost(o.Local, advIP.String()).clone()
	if m.meta, err = encodeMeta(m.local, o.Partitions, false); err != nil {
		_ = tr.Shutdown()
		return nil, err
	}
	c := memberlist.DefaultLANConfig()
	m.view = newView(m.name, o.Partitions, suspicion{mult: o.SuspicionMult, maxMult: c.SuspicionMaxTimeoutMult, probe: o.ProbeInterval},
		o.Metrics, m.log)

	c.Name = m.name
	c.Transport = tr
	c.BindAddr, c.BindPort = bind.Addr().String(), port
	c.AdvertiseAddr, c.AdvertisePort = advIP.String(), advPort
	c.ProbeInterval, c.ProbeTimeout, c.SuspicionMult = o.ProbeInterval, o.ProbeTimeout, o.SuspicionMult
	c.GossipInterval, c.PushPullInterval = o.GossipInterval, o.PushPullInterval
	c.Delegate, c.Events, c.Alive, c.Conflict = delegate{m}, delegate{m}, delegate{m}, delegate{m}
	c.Logger = logger
	if len(o.Keys) > 0 {
		if c.Keyring, err = memberlist.NewKeyring(o.Keys, o.Keys[0]); err != nil {
			_ = tr.Shutdown()
			return nil, fmt.Errorf("cluster: keyring: %w", err)
		}
	}
	if m.ml, err = memberlist.Create(c); err != nil {
		_ = tr.Shutdown()
		return nil, fmt.Errorf("cluster: start memberlist: %w", err)
	}
	m.wg.Add(2)
	go m.loop()
	m.join() // before the rejoin loop, so Start returns with the seeds that answered joined
	go m.rejoin()
	m.log.Info("cluster membership started", "name", m.name, "bind", net.JoinHostPort(bind.Addr().String(), strconv.Itoa(port)),
		"advertise", m.addr, "seeds", o.Join, "encrypted", len(o.Keys) > 0)
	return m, nil
}

// withActorHost returns m with the host of its ActorAddr, RaftAddr and
// APIAddr set to host where it is empty or unspecified.
func withActorHost(m Meta, host string) Meta {
	m.ActorAddr, m.RaftAddr, m.APIAddr = withHost(m.ActorAddr, host), withHost(m.RaftAddr, host), withHost(m.APIAddr, host)
	return m
}

// withHost returns addr with its host set to host when it is empty or
// unspecified.
func withHost(addr, host string) string {
	h, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip, err := netip.ParseAddr(h); h == "" || err == nil && ip.IsUnspecified() {
		return net.JoinHostPort(host, port)
	}
	return addr
}

// Name returns the node's name in the cluster.
func (m *Membership) Name() string { return m.name }

// Addr returns the host:port other members reach this node's membership at.
func (m *Membership) Addr() string { return m.addr }

// Members returns every member this node knows, itself included, by name:
// a copy, cheap enough to read on a timer.
func (m *Membership) Members() []Member { return m.view.members() }

// Local returns the metadata this node gossips about itself.
func (m *Membership) Local() Meta {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.local.clone()
}

// SetLocal replaces the metadata this node gossips about itself and waits
// until the update is gossiped (up to Options.BroadcastTimeout; the update
// stands even when that times out). It fails on metadata that cannot be
// encoded, and once the node left.
func (m *Membership) SetLocal(meta Meta) error {
	meta = withActorHost(meta.clone(), netip.MustParseAddrPort(m.addr).Addr().String())
	b, err := encodeMeta(meta, m.opts.Partitions, false)
	if err != nil {
		return err
	}
	m.mu.Lock()
	if m.left {
		m.mu.Unlock()
		return ErrLeft
	}
	m.local, m.meta = meta, b
	m.mu.Unlock()
	if err := m.ml.UpdateNode(m.opts.BroadcastTimeout); err != nil {
		return fmt.Errorf("cluster: gossip the node's metadata: %w", err)
	}
	return nil
}

// UpdateLocal changes the node's metadata with change, which gets a copy
// of it, and gossips the result as SetLocal does. Updates are made one at
// a time, so that callers changing different fields keep each other's.
func (m *Membership) UpdateLocal(change func(*Meta)) error {
	m.updateMu.Lock()
	defer m.updateMu.Unlock()
	meta := m.Local()
	change(&meta)
	return m.SetLocal(meta)
}

// Subscribe returns a channel of every membership event from now on, in
// order, and a cancel that ends the subscription and closes the channel
// (Shutdown closes it too). Events queue for a slow reader without ever
// delaying the membership; read Members after Subscribe for the view the
// events change.
func (m *Membership) Subscribe() (<-chan Event, func()) { return m.view.subscribe() }

// Leave tells the cluster this node leaves, waiting up to timeout for
// that to be gossiped; the others then list it as left rather than dead.
// It first gossips its metadata flagged leaving and not ready
// (memberlist's leave notification does not tell a leave from a failure),
// then leaves memberlist. Call Shutdown afterwards. Leave is idempotent.
func (m *Membership) Leave(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	m.mu.Lock()
	if m.shut {
		m.mu.Unlock()
		return ErrLeft
	}
	flagged := m.left
	m.left = true
	if !flagged {
		m.local.Ready = false
		b, err := encodeMeta(m.local, m.opts.Partitions, true)
		if err != nil {
			m.mu.Unlock()
			return err // the same metadata encoded before: cannot happen
		}
		m.meta = b
	}
	m.mu.Unlock()
	if !flagged {
		if err := m.ml.UpdateNode(timeout); err != nil {
			m.log.Warn("the leaving flag may not have reached the others: they may list this node dead rather than left", "err", err)
		}
	}
	if err := m.ml.Leave(max(time.Until(deadline), time.Millisecond)); err != nil {
		return fmt.Errorf("cluster: leave: %w", err)
	}
	m.log.Info("left the cluster", "name", m.name)
	return nil
}

// Shutdown stops gossip, closes the listeners and every subscription and
// ends the membership's goroutines. Without a Leave before, the others
// find this node dead. Shutdown is idempotent.
func (m *Membership) Shutdown() error {
	m.mu.Lock()
	if m.shut {
		m.mu.Unlock()
		return nil
	}
	m.left, m.shut = true, true
	m.mu.Unlock()
	close(m.stop)
	m.wg.Wait()
	err := m.ml.Shutdown()
	m.view.close()
	return err
}

// loop applies what memberlist told to the view, and refreshes the view
// every Refresh.
func (m *Membership) loop() {
	defer m.wg.Done()
	t := time.NewTicker(m.opts.Refresh)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-m.inbox.wake:
			m.view.apply(m.inbox.take())
		case now := <-t.C:
			m.view.apply(m.inbox.take())
			m.view.refresh(now, m.opts.Forget, m.ml.GetHealthScore())
		}
	}
}

// rejoin joins the seeds again every Rejoin while the node is alone, and
// otherwise tries to reach one member it declared dead.
func (m *Membership) rejoin() {
	defer m.wg.Done()
	t := time.NewTicker(m.opts.Rejoin)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		}
		m.mu.Lock()
		left := m.left
		m.mu.Unlock()
		if left {
			continue
		}
		if m.view.alone() {
			m.join()
		} else if addr := m.view.deadAddr(); addr != "" {
			if _, err := m.ml.Join([]string{addr}); err == nil {
				m.log.Info("reached a member declared dead", "addr", addr)
			}
		}
	}
}

// join joins the seeds other than this node, if any.
func (m *Membership) join() {
	var seeds []string
	for _, s := range m.opts.Join {
		if s != m.addr {
			seeds = append(seeds, s)
		}
	}
	if len(seeds) == 0 {
		return
	}
	n, err := m.ml.Join(seeds)
	if n == 0 {
		m.log.Info("no seed answered; trying again while alone", "seeds", seeds, "every", m.opts.Rejoin, "err", err)
		return
	}
	m.log.Info("joined the cluster", "seeds_answered", n, "of", len(seeds))
}
