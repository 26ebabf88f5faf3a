// Package config loads, validates and documents persona's configuration.
//
// A configuration is built in layers: Default, then a YAML file (persona.yaml)
// decoded strictly, then PERSONA_* environment variables, and is finally
// checked by Validate. Generate writes a commented file holding the defaults.
package config

import (
	"path/filepath"
	"time"
)

// Config is the complete persona configuration.
type Config struct {
	// ServerName is the Matrix server name, the domain part of user IDs.
	ServerName string `yaml:"server_name"`
	// DataDir holds the database, media and generated secrets.
	DataDir string `yaml:"data_dir"`
	// Listen holds the network addresses served.
	Listen Listen `yaml:"listen"`
	// Federation configures the Server-Server API and this server's identity.
	Federation Federation `yaml:"federation"`
	// Registration controls who may create accounts.
	Registration Registration `yaml:"registration"`
	// Limits caps request and upload sizes.
	Limits Limits `yaml:"limits"`
	// Profile controls profile field limits, privacy and rate limiting.
	Profile Profile `yaml:"profile"`
	// Propagation tunes how profile changes reach the user's rooms.
	Propagation Propagation `yaml:"propagation"`
	// Actors tunes the per-user actor system.
	Actors Actors `yaml:"actors"`
	// Storage tunes how the node's database makes writes durable.
	Storage Storage `yaml:"storage"`
	// Cluster makes the node a member of a persona cluster.
	Cluster Cluster `yaml:"cluster"`
	// Log configures logging.
	Log Log `yaml:"log"`
}

// Listen holds the addresses persona listens on.
type Listen struct {
	// Client is the host:port of the Client-Server API and media endpoints.
	Client string `yaml:"client"`
	// Metrics is the host:port of the Prometheus /metrics endpoint; "" disables it.
	Metrics string `yaml:"metrics"`
	// Federation is the host:port of the Server-Server API, served over TLS;
	// "" disables federation.
	Federation string `yaml:"federation"`
}

// Federation configures how persona talks to other Matrix servers.
type Federation struct {
	// TLSCert is the PEM certificate (chain) of the federation listener and
	// TLSKey its PEM private key; both "" means a self-signed certificate
	// made on first start and kept in DataDir.
	TLSCert string `yaml:"tls_cert"`
	// TLSKey is the PEM private key of TLSCert.
	TLSKey string `yaml:"tls_key"`
	// SigningKeyFile is the file holding the server's ed25519 signing key,
	// made on first start when missing; "" means signing.key in DataDir.
	// The nodes of a cluster are one server: they name one file, or copies.
	SigningKeyFile string `yaml:"signing_key_file"`
	// WellKnownServer, when set, is the "m.server" that
	// /.well-known/matrix/server answers on the client listener.
	WellKnownServer string `yaml:"well_known_server"`
	// TrustedKeyServers are notaries: servers whose /_matrix/key/v2/query is
	// asked for the keys of servers that cannot be reached directly.
	TrustedKeyServers []string `yaml:"trusted_key_servers"`
	// Destinations maps a server name to the base URL
	// (https://host:port) its requests go to, bypassing server discovery.
	Destinations map[string]string `yaml:"destinations"`
	// InsecureSkipVerify accepts any TLS certificate from peers.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
	// KeyValidity is how far ahead of now the valid_until_ts of this
	// server's key response lies.
	KeyValidity time.Duration `yaml:"key_validity"`
	// AllowProfileLookup lets other servers read local profiles through
	// /_matrix/federation/v1/query/profile; false answers 403.
	AllowProfileLookup bool `yaml:"allow_profile_lookup"`
	// OutboxBackoffMin is the shortest wait before a transaction another
	// server did not accept is sent to it again; each failure in a row
	// doubles the window the wait is drawn from, up to OutboxBackoffMax.
	// Shorter finds a returning server sooner, longer spares one that is down.
	OutboxBackoffMin time.Duration `yaml:"outbox_backoff_min"`
	// OutboxBackoffMax is the longest wait between two attempts to send to
	// a server.
	OutboxBackoffMax time.Duration `yaml:"outbox_backoff_max"`
	// OutboxHorizon is how old the oldest entry queued for a server may grow
	// before its queue is compacted to each room's latest event; the server
	// then fetches the events in between itself (get_missing_events).
	OutboxHorizon time.Duration `yaml:"outbox_horizon"`
	// InboundTxnTTL is how long the answer to another server's transaction
	// is kept, to answer a resend of the same txnId without applying it
	// again.
	InboundTxnTTL time.Duration `yaml:"inbound_txn_ttl"`
	// ProfileCacheTTL is how long a profile another server answered is
	// served from the cache before it is asked again.
	ProfileCacheTTL time.Duration `yaml:"profile_cache_ttl"`
	// ProfileCacheErrorTTL is how long a failed profile query (no such
	// user, refused, server unreachable) is answered from memory before
	// the server is asked again.
	ProfileCacheErrorTTL time.Duration `yaml:"profile_cache_error_ttl"`
}

// Registration controls account creation.
type Registration struct {
	// Open allows anyone to register with m.login.dummy.
	Open bool `yaml:"open"`
	// SharedSecret authorises admin registration; "" means one is generated
	// on first start and stored at SharedSecretPath.
	SharedSecret string `yaml:"shared_secret"`
}

// Limits caps the size of requests.
type Limits struct {
	// MaxUploadBytes is the largest media upload accepted.
	MaxUploadBytes int64 `yaml:"max_upload_bytes"`
	// MaxRequestBytes is the largest JSON request body accepted.
	MaxRequestBytes int64 `yaml:"max_request_bytes"`
}

// Profile controls profile fields and access to them.
type Profile struct {
	// MaxDisplaynameChars is the longest display name accepted.
	MaxDisplaynameChars int `yaml:"max_displayname_chars"`
	// MaxAvatarURLChars is the longest avatar_url accepted.
	MaxAvatarURLChars int `yaml:"max_avatar_url_chars"`
	// RequireAuth requires an access token to read profiles.
	RequireAuth bool `yaml:"require_auth"`
	// LimitToSharedRooms answers profile lookups only between users sharing a room.
	LimitToSharedRooms bool `yaml:"limit_to_shared_rooms"`
	// PreserveRoomOverrides keeps per-room display names and avatars when the
	// global profile changes.
	PreserveRoomOverrides bool `yaml:"preserve_room_overrides"`
	// RateLimit limits profile changes.
	RateLimit RateLimit `yaml:"rate_limit"`
}

// RateLimit is a token bucket.
type RateLimit struct {
	// Burst is the bucket size; 0 disables the limit.
	Burst int `yaml:"burst"`
	// PerSecond is the refill rate in tokens per second.
	PerSecond float64 `yaml:"per_second"`
}

// Propagation tunes how profile changes are pushed into rooms.
type Propagation struct {
	// MaxBacklog is how many versions a room may lag before it is sent the
	// latest version alone instead of every version in turn.
	MaxBacklog int `yaml:"max_backlog"`
	// MaxInFlight is how many room updates of one user may be in flight at once.
	MaxInFlight int `yaml:"max_in_flight"`
	// ResendAfter is how long an unacknowledged update waits before it is resent.
	ResendAfter time.Duration `yaml:"resend_after"`
}

// Actors tunes the actor system.
type Actors struct {
	// Partitions is the number of actor partitions.
	Partitions int `yaml:"partitions"`
	// PassivateAfter is how long an actor may idle before it stops and frees its memory.
	PassivateAfter time.Duration `yaml:"passivate_after"`
}

// Storage tunes how the node's database makes writes durable.
type Storage struct {
	// CommitPath is "log", the store's own commit log, or "raft"
	// (experimental), a raft group per partition and one for the node's
	// own keys, this node their only member, their log in DataDir/raft in
	// the commit log's place.
	CommitPath string `yaml:"commit_path"`
}

// Cluster configures the node's membership of a persona cluster.
type Cluster struct {
	// Enabled makes the node join a cluster; false runs it alone.
	Enabled bool `yaml:"enabled"`
	// NodeName is the node's name, unique in the cluster; "" is the host
	// name and the bind port ("host-7946").
	NodeName string `yaml:"node_name"`
	// Bind is the IP:port of the membership protocol (memberlist), TCP and UDP.
	Bind string `yaml:"bind"`
	// Advertise is the IP:port the other nodes reach Bind at; "" is Bind's.
	Advertise string `yaml:"advertise"`
	// ActorBind is the host:port of the node's actor system (protoactor
	// remote); the others learn it through the membership.
	ActorBind string `yaml:"actor_bind"`
	// RaftBind is the host:port where the node takes the replication
	// traffic of the partitions it holds (raft); the others learn it
	// through the membership.
	RaftBind string `yaml:"raft_bind"`
	// Join lists the host:port (their Bind or Advertise) of nodes to join;
	// empty starts a new cluster.
	Join []string `yaml:"join"`
	// ReplicationFactor is how many nodes hold each partition, capped by
	// the number of nodes.
	ReplicationFactor int `yaml:"replication_factor"`
	// Partitions is the number of partitions of the cluster, fixed for its
	// life; it must equal actors.partitions.
	Partitions int `yaml:"partitions"`
	// ElectionTimeout is how long a partition's replicas wait for their
	// leader before electing another.
	ElectionTimeout time.Duration `yaml:"election_timeout"`
	// DrainDelay is the least time a stopping node keeps its listeners
	// open after GET /ready turns 503, so that a load balancer sees it
	// not ready and stops sending it requests before connections are
	// refused. Meanwhile the node hands its partitions' leadership over
	// and forwards what it is sent. Longer suits a slower probe; it
	// lengthens every stop by what the drain itself does not take.
	DrainDelay time.Duration `yaml:"drain_delay"`
	// GossipKeyFile is a file of base64 keys that encrypt the membership
	// protocol, one per line (the first encrypts, each decrypts); ""
	// gossips in the clear.
	GossipKeyFile string `yaml:"gossip_key_file"`
}

// Log configures logging.
type Log struct {
	// Level is one of debug, info, warn, error.
	Level string `yaml:"level"`
	// Format is text or json.
	Format string `yaml:"format"`
}

// Default returns a new Config holding the defaults. It is the single source
// of default values: Parse starts from it and Generate prints it.
func Default() *Config {
	return &Config{
		ServerName: "localhost:8008",
		DataDir:    "./data",
		Listen: Listen{
			Client:     "127.0.0.1:8008",
			Metrics:    "127.0.0.1:9108",
			Federation: "127.0.0.1:8448",
		},
		Federation: Federation{
			TrustedKeyServers:    []string{},
			Destinations:         map[string]string{},
			KeyValidity:          7 * 24 * time.Hour,
			AllowProfileLookup:   true,
			OutboxBackoffMin:     time.Second,
			OutboxBackoffMax:     time.Hour,
			OutboxHorizon:        24 * time.Hour,
			InboundTxnTTL:        24 * time.Hour,
			ProfileCacheTTL:      24 * time.Hour,
			ProfileCacheErrorTTL: time.Minute,
		},
		Registration: Registration{Open: false, SharedSecret: ""},
		Limits: Limits{
			MaxUploadBytes:  10 << 20,
			MaxRequestBytes: 1 << 20,
		},
		Profile: Profile{
			MaxDisplaynameChars:   256,
			MaxAvatarURLChars:     1000,
			RequireAuth:           false,
			LimitToSharedRooms:    false,
			PreserveRoomOverrides: true,
			RateLimit:             RateLimit{Burst: 10, PerSecond: 1},
		},
		Propagation: Propagation{
			MaxBacklog:  64,
			MaxInFlight: 256,
			ResendAfter: 2 * time.Second,
		},
		Actors: Actors{
			Partitions:     64,
			PassivateAfter: 2 * time.Minute,
		},
		Storage: Storage{CommitPath: "log"},
		Cluster: Cluster{
			Enabled:           false,
			Bind:              "127.0.0.1:7946",
			ActorBind:         "127.0.0.1:8090",
			RaftBind:          "127.0.0.1:8190",
			Join:              []string{},
			ReplicationFactor: 3,
			Partitions:        64,
			ElectionTimeout:   time.Second,
			DrainDelay:        5 * time.Second,
		},
		Log: Log{Level: "info", Format: "text"},
	}
}

// SharedSecretPath is the file holding the registration shared secret that
// is generated when Registration.SharedSecret is empty.
func (c *Config) SharedSecretPath() string {
	return filepath.Join(c.DataDir, "registration_shared_secret")
}
