package actors

import (
	"errors"
	"sort"
	"strings"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"persona/host"
	"persona/storage"
	"persona/wire"
)

// KindUserDir is the user directory: one actor (id "local") indexing local
// users' global displayname and avatar for /user_directory/search. It holds
// global profiles only: room-specific names are searched in the rooms
// themselves (SearchMembers), for their members only.
const KindUserDir = "userdir"

// userDir is the directory actor. Entries arrive from user actors after each
// durable profile change and whenever a user actor activates, so a lost
// update heals the next time the user is active.
type userDir struct {
	h       *Service
	id      string
	idle    *host.IdleWatch
	entries map[string]*wire.DirectoryEntry
	loadErr error
	// part and fence stamp every batch (storage.Batch.Fence): the actor's
	// partition and the host's fence of it when the actor loaded.
	part  int
	fence uint64
}

func newUserDir(h *Service, id string, idle *host.IdleWatch) *userDir {
	return &userDir{h: h, id: id, idle: idle}
}

func (d *userDir) key(parts ...string) []byte {
	return storage.Key(append([]string{"p", partitionName(d.h.Partition(d.id)), "ud", d.id}, parts...)...)
}

func (d *userDir) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		d.loadErr = d.load()
		d.idle.Set(d.h.cfg.Actors.PassivateAfter)
	case *host.IdleTimeout:
		d.h.idle(ctx, d.idle, false)
	case *host.StopWhenIdle:
		ctx.Stop(ctx.Self())
	case *wire.DirectoryEntry:
		d.update(m)
	case *wire.SearchUsers:
		if d.loadErr != nil {
			ctx.Respond(&wire.SearchReply{})
			return
		}
		ctx.Respond(d.search(m))
	}
}

func (d *userDir) load() error {
	d.part = d.h.Partition(d.id)
	d.fence = d.h.rt.Fence(d.part) // before the entries: what follows was written under it
	d.entries = map[string]*wire.DirectoryEntry{}
	prefix := storage.Prefix(string(d.key("e")))
	return d.h.store.Scan(prefix, nil, func(k, v []byte) error {
		e := &wire.DirectoryEntry{}
		if err := proto.Unmarshal(v, e); err != nil {
			return errors.Join(errors.New("decode directory entry"), err)
		}
		d.entries[e.UserId] = e
		return nil
	})
}

// update stores an entry when it changed. Losing one in a crash, or to a
// fence (a directory actor of an ownership that ended), is healed by the
// user's next activation, so it is written without waiting.
func (d *userDir) update(e *wire.DirectoryEntry) {
	if old := d.entries[e.UserId]; old != nil && proto.Equal(old, e) {
		return
	}
	d.entries[e.UserId] = e
	raw, _ := proto.Marshal(e)
	var b storage.Batch
	b.Set(d.key("e", e.UserId), raw)
	b.Fence(d.part, d.fence)
	d.h.store.Commit(&b, func(err error) {
		switch {
		case errors.Is(err, storage.ErrFenced):
			d.h.log.Debug("user directory write of an ownership that ended", "user", e.UserId)
		case err != nil:
			d.h.log.Error("user directory write failed", "err", err)
		}
	})
}

// search matches term, case-insensitively, against each word of the
// displayname and the user ID, best matches (prefix of a word) first.
func (d *userDir) search(m *wire.SearchUsers) *wire.SearchReply {
	term := strings.ToLower(strings.TrimSpace(m.Term))
	out := &wire.SearchReply{}
	if term == "" {
		return out
	}
	var hits []searchHit
	for _, e := range d.entries {
		uid := strings.ToLower(e.UserId)
		score := nameScore(e.Displayname, term)
		switch {
		case strings.HasPrefix(uid, "@"+term) || strings.HasPrefix(uid, term):
			score = 2
		case score == 0 && strings.Contains(uid, term):
			score = 1
		}
		if score > 0 {
			hits = append(hits, searchHit{e, score})
		}
	}
	out.Entries, out.Limited = bestHits(hits, m.Limit)
	return out
}

// searchHit is a directory entry that matched a search, with its score.
type searchHit struct {
	e     *wire.DirectoryEntry
	score int
}

// bestHits orders hits best score first, then by user ID, and keeps the
// first limit (0: 50); limited reports that some were left out.
func bestHits(hits []searchHit, limit uint32) (entries []*wire.DirectoryEntry, limited bool) {
	sort.Slice(hits, func(i, j int) bool {
		if hits[i].score != hits[j].score {
			return hits[i].score > hits[j].score
		}
		return hits[i].e.UserId < hits[j].e.UserId
	})
	n := int(limit)
	if n <= 0 {
		n = 50
	}
	if len(hits) > n {
		hits, limited = hits[:n], true
	}
	for _, h := range hits {
		entries = append(entries, h.e)
	}
	return entries, limited
}

// nameScore rates how a displayname matches term (already lowercased and
// trimmed): 2 when the name starts with it, 1 when it contains it, 0 when it
// does not match. Room member searches use it as well.
func nameScore(name, term string) int {
	name = strings.ToLower(name)
	switch {
	case strings.HasPrefix(name, term):
		return 2
	case strings.Contains(name, term):
		return 1
	}
	return 0
}

// publishEntry sends the user's global profile to the directory.
func (u *user) publishEntry() {
	if !u.exists {
		return
	}
	var dn, av string
	_ = jsonString(u.committed.Fields["displayname"], &dn)
	_ = jsonString(u.committed.Fields["avatar_url"], &av)
	u.h.Send(KindUserDir, "local", &wire.DirectoryEntry{UserId: u.id, Displayname: dn, AvatarUrl: av})
}
