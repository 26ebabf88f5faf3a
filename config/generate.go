package config

import (
	"bytes"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"
)

// Generate returns a commented persona.yaml holding the defaults, with a
// note above every key on what it does and what changing it costs.
// Parse(Generate()) yields Default().
func Generate() []byte {
	return generate(Default())
}

// generate renders c as a commented YAML file.
func generate(c *Config) []byte {
	var b bytes.Buffer
	if err := fileTemplate.Execute(&b, c); err != nil {
		panic("config: generate: " + err.Error()) // the template is fixed; tests cover it
	}
	return b.Bytes()
}

var fileTemplate = template.Must(template.New("persona.yaml").Funcs(template.FuncMap{
	"q":    strconv.Quote,
	"dur":  func(d time.Duration) string { return strconv.Quote(shortDuration(d)) },
	"num":  func(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) },
	"list": flowList,
	"dict": flowMap,
}).Parse(`# persona.yaml: configuration of the persona Matrix profile daemon.
#
# Every key is optional; a missing key keeps the default shown here. Unknown
# keys are an error, so a typo cannot silently fall back to a default.
# Any key can be overridden by an environment variable: PERSONA_ and the key's
# path in upper case joined with "_", e.g. PERSONA_LISTEN_CLIENT or
# PERSONA_PROFILE_RATE_LIMIT_BURST. Durations are written like "500ms", "2s", "1m30s".

# Matrix server name, the part after the colon in user IDs (@alice:<server_name>).
# Changing it later orphans every existing account, so settle it before first start.
server_name: {{q .ServerName}}

# Directory for the database, media and generated secrets. Keep it on local,
# persistent storage and back it up; losing it loses every account and profile.
data_dir: {{q .DataDir}}

# Network addresses to serve.
listen:
  # host:port of the Client-Server API and media. A loopback address behind a
  # TLS-terminating reverse proxy is safest; ":8008" listens on all interfaces.
  client: {{q .Listen.Client}}
  # host:port of the Prometheus /metrics endpoint; "" disables it.
  # Keep it off public interfaces: metrics reveal usage patterns.
  metrics: {{q .Listen.Metrics}}
  # host:port of the federation (Server-Server) API, served over TLS; "" disables
  # federation. Other servers reach this one here, so it faces the network they
  # are on; 8448 is the port they try when discovery names none.
  federation: {{q .Listen.Federation}}

# Federation with other Matrix servers: this server's TLS certificate, where
# peers' keys come from and how peers are reached.
federation:
  # File of the server's signing key, made on first start when missing; ""
  # keeps it in <data_dir>/signing.key. Losing it makes peers distrust events
  # this server signed before. The nodes of a cluster are one server and sign
  # with one key: give them one file (on shared storage) or copies of it.
  signing_key_file: {{q .Federation.SigningKeyFile}}
  # File of the federation listener's PEM certificate, with its chain. Left ""
  # with tls_key, a self-signed certificate is made on first start and kept in
  # <data_dir>/tls.crt and tls.key: peers that verify certificates refuse it,
  # so set a real one (from an ACME client, say) for public federation.
  tls_cert: {{q .Federation.TLSCert}}
  # File of the PEM private key of tls_cert; set both or neither.
  tls_key: {{q .Federation.TLSKey}}
  # When set, /.well-known/matrix/server on the client listener answers
  # {"m.server": this}: peers then reach server_name at this host:port, for
  # when the federation listener is not at server_name:8448.
  well_known_server: {{q .Federation.WellKnownServer}}
  # Notaries: server names whose /_matrix/key/v2/query is asked for a peer's
  # keys when the peer does not answer itself. Each is trusted with every key it
  # vouches for; their own keys are fetched from them directly.
  trusted_key_servers: {{list .Federation.TrustedKeyServers}}
  # Server name -> base URL ("https://127.0.0.1:8449") of peers reached at that
  # URL instead of by server discovery (well-known, SRV, DNS). For tests and
  # private networks; logged at start, since it overrides what DNS says.
  destinations: {{dict .Federation.Destinations}}
  # true accepts any TLS certificate from peers, self-signed ones included.
  # For tests on one machine only: anyone on the path can then pose as a peer.
  insecure_skip_verify: {{.Federation.InsecureSkipVerify}}
  # How long peers may cache this server's signing key (valid_until_ts of
  # /_matrix/key/v2/server). Longer saves them fetches; shorter makes a
  # replaced key reach them sooner. Peers cap it at 7 days.
  key_validity: {{dur .Federation.KeyValidity}}
  # true lets other servers read local users' profiles
  # (/_matrix/federation/v1/query/profile); false answers them 403. The peer is
  # authenticated by its signature, so profile.require_auth does not apply.
  allow_profile_lookup: {{.Federation.AllowProfileLookup}}
  # After a server fails to take a transaction (down, unreachable, an error),
  # the next attempt waits at least this long; each failure in a row doubles
  # the window the wait is drawn from. Shorter finds a returning server
  # sooner, longer spares one that is struggling.
  outbox_backoff_min: {{dur .Federation.OutboxBackoffMin}}
  # The longest wait between two attempts to send to a server. A server back
  # after a long outage gets its events at most this late (or at a restart).
  outbox_backoff_max: {{dur .Federation.OutboxBackoffMax}}
  # Once the oldest event queued for a server is this old, its queue keeps
  # only each room's latest event and the server fetches the ones in between
  # itself. Longer keeps more on disk for a server that is down; shorter
  # makes one that returns ask for more.
  outbox_horizon: {{dur .Federation.OutboxHorizon}}
  # How long the answer to another server's transaction is kept, so that a
  # resend of it (the same txnId) gets the same answer and is not applied
  # again. Every event is applied once whatever this is; longer costs disk.
  inbound_txn_ttl: {{dur .Federation.InboundTxnTTL}}
  # How long a profile of another server's user, as that server answered it,
  # is served from the cache (kept in the database) before that server is
  # asked again. The user's member events and profile updates from that server
  # refresh it meanwhile; longer saves queries, shorter shows custom fields
  # changed there sooner.
  profile_cache_ttl: {{dur .Federation.ProfileCacheTTL}}
  # How long a failed profile query (no such user, refused, server down) is
  # answered from memory before that server is asked again: what keeps a busy
  # client from sending a query per request to a server that is down.
  profile_cache_error_ttl: {{dur .Federation.ProfileCacheErrorTTL}}

# Who may create accounts.
registration:
  # true lets anyone register with m.login.dummy, with no captcha or e-mail check.
  # Convenient for private and test servers, an open door for spam otherwise.
  open: {{.Registration.Open}}
  # Secret for shared-secret (admin) registration. "" generates a random one on
  # first start and stores it in <data_dir>/registration_shared_secret, which
  # keeps it out of this file; set it here only if the file is kept private.
  shared_secret: {{q .Registration.SharedSecret}}

# Size caps that protect memory and disk from oversized requests.
limits:
  # Largest media upload accepted, in bytes. Higher allows bigger avatars at the
  # cost of disk space and memory per upload in progress.
  max_upload_bytes: {{.Limits.MaxUploadBytes}}
  # Largest JSON request body accepted, in bytes. Bounds the memory one request
  # can take; profile requests are small, so there is rarely a reason to raise it.
  max_request_bytes: {{.Limits.MaxRequestBytes}}

# Profile fields, who may read them, and how often they may change.
profile:
  # Longest display name accepted, in characters. Longer names are stored and
  # copied into every room the user is in.
  max_displayname_chars: {{.Profile.MaxDisplaynameChars}}
  # Longest avatar_url accepted, in characters. mxc:// URIs are short; a low
  # limit keeps junk out of room state.
  max_avatar_url_chars: {{.Profile.MaxAvatarURLChars}}
  # true requires an access token to read profiles. More private, but anyone
  # looking users up without a token gets an error instead.
  require_auth: {{.Profile.RequireAuth}}
  # true answers profile lookups only between users who share a room. Stops
  # user enumeration; costs a membership check on every lookup.
  limit_to_shared_rooms: {{.Profile.LimitToSharedRooms}}
  # true keeps a display name or avatar a user set for one room when their
  # global profile changes; false overwrites every room with the new profile.
  preserve_room_overrides: {{.Profile.PreserveRoomOverrides}}
  # Token bucket limiting how often profiles may change.
  rate_limit:
    # Profile changes allowed in a burst (token bucket size); 0 disables the
    # limit. Higher tolerates scripted clients, lower curbs propagation storms.
    burst: {{.Profile.RateLimit.Burst}}
    # Sustained profile changes per second once the burst is spent.
    per_second: {{num .Profile.RateLimit.PerSecond}}

# How profile changes reach the rooms a user is in.
propagation:
  # A room more than this many profile versions behind is sent the latest
  # version alone. Lower catches up faster; higher sends more intermediate states.
  max_backlog: {{.Propagation.MaxBacklog}}
  # Room updates of one user in flight at once. Higher reaches many rooms
  # faster; lower bounds the memory and load one user can cause.
  max_in_flight: {{.Propagation.MaxInFlight}}
  # Unacknowledged room updates are sent again after this long. Shorter
  # recovers faster from lost updates but may send duplicates under load.
  resend_after: {{dur .Propagation.ResendAfter}}

# The actor system that holds per-user state in memory.
actors:
  # Number of actor partitions. More spreads work over more cores at a small
  # fixed memory cost each; fewer suits small machines.
  partitions: {{.Actors.Partitions}}
  # Idle actors stop after this long and free their memory; the next request
  # reloads them from storage. Shorter saves memory, longer saves reloads.
  passivate_after: {{dur .Actors.PassivateAfter}}

# How the database makes writes durable.
storage:
  # log: every write is synced to the store's own commit log. raft
  # (experimental, for measuring): raft groups whose only member is this
  # node, one per partition and one for the node's own keys, take the
  # commit log's place, their log in <data_dir>/raft. Switch only on a
  # stopped node; raft back to log needs a clean stop.
  commit_path: {{q .Storage.CommitPath}}

# Membership of a persona cluster: nodes that share the users and rooms
# between them. The membership protocol (hashicorp/memberlist, SWIM gossip)
# finds nodes failed within about 5 s with its LAN timings.
cluster:
  # true makes this node a member of a cluster; false runs it alone (the
  # keys below are still checked, but not used).
  enabled: {{.Cluster.Enabled}}
  # The node's name, unique in the cluster and kept across restarts (a node
  # back under its name takes its place again). "" is the host name and the
  # bind port, e.g. "db1-7946".
  node_name: {{q .Cluster.NodeName}}
  # IP:port of the membership protocol, TCP and UDP (open both in firewalls).
  # 0.0.0.0 listens on all interfaces.
  bind: {{q .Cluster.Bind}}
  # IP:port the other nodes reach bind at, when that differs (NAT, a
  # container's published port, bind 0.0.0.0); "" is bind's (with 0.0.0.0,
  # a private address of the machine).
  advertise: {{q .Cluster.Advertise}}
  # host:port of this node's actor system, where other nodes send the
  # messages of the partitions it leads; gossiped to them. A host 0.0.0.0
  # or "" is told to the others as the advertised address.
  actor_bind: {{q .Cluster.ActorBind}}
  # host:port where this node takes the replication traffic (raft) of the
  # partitions it holds a copy of; gossiped to the others. A host 0.0.0.0 or
  # "" is told to the others as the advertised address.
  raft_bind: {{q .Cluster.RaftBind}}
  # host:port (bind or advertise) of nodes to join at start: any one that
  # answers is enough, so list several. Empty starts a new cluster. Nodes
  # not answering are tried again every 5 s while this node is alone.
  join: {{list .Cluster.Join}}
  # How many nodes hold a copy of each partition; fewer nodes hold one each.
  # More survives more failures at the cost of more writes and disk.
  replication_factor: {{.Cluster.ReplicationFactor}}
  # Number of partitions users and rooms hash to, fixed for the life of the
  # cluster; it must equal actors.partitions. More spreads leadership more
  # evenly across nodes; at most 1024.
  partitions: {{.Cluster.Partitions}}
  # How long a partition's replicas wait without hearing their leader before
  # they elect another. Shorter fails over sooner; too short elects needlessly
  # on a busy node.
  election_timeout: {{dur .Cluster.ElectionTimeout}}
  # How long a stopping node (SIGTERM) keeps its listeners open after GET
  # /ready turns 503, at least: a load balancer polling /ready stops sending
  # it requests meanwhile, which it still answers (forwarding them to the
  # partitions' new leaders). Set it above the balancer's probe interval
  # times its failure threshold; 0 closes them once the node has left.
  drain_delay: {{dur .Cluster.DrainDelay}}
  # File of base64 keys (16, 24 or 32 bytes: "openssl rand -base64 32"), one
  # a line, that encrypt and authenticate the membership protocol; "" sends
  # it in the clear. The first key encrypts, each decrypts: to change keys,
  # add the new one second on every node, then move it first, then drop the
  # old one. Keep the file private (0600). The keys also authenticate the
  # nodes to each other on raft_bind, actor_bind and the media route for
  # members (without encrypting them); "" leaves those open to whoever
  # reaches them.
  gossip_key_file: {{q .Cluster.GossipKeyFile}}

# Log verbosity and format.
log:
  # debug, info, warn or error. debug is verbose and may log user IDs.
  level: {{q .Log.Level}}
  # text for people reading a terminal, json for log collectors.
  format: {{q .Log.Format}}
`))

// shortDuration formats d like time.Duration.String without trailing zero
// units: "2m" rather than "2m0s".
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// flowList renders items as a YAML flow sequence of quoted strings.
func flowList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = strconv.Quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// flowMap renders m as a YAML flow mapping of quoted strings, in key order.
func flowMap(m map[string]string) string {
	q := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		q = append(q, strconv.Quote(k)+": "+strconv.Quote(m[k]))
	}
	return "{" + strings.Join(q, ", ") + "}"
}
