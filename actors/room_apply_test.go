package actors

import (
	"fmt"
	"testing"

	"pgregory.net/rapid"

	"persona/wire"
)

// TestApplyRuleUnderAFaultyNetwork checks the delivery protocol end to end
// on the pure apply rule: a user writes versions 1..n; the sender sends each
// room message as "every version after my cursor"; the network drops,
// duplicates and reorders messages and acks; the sender resends on timeout.
// Whatever happens, the room ends with exactly the content of applying every
// version once in order, it never applies a version twice or goes back, and
// it appends at most one event per version.
func TestApplyRuleUnderAFaultyNetwork(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 12).Draw(t, "versions")
		preserve := rapid.Bool().Draw(t, "preserve")
		ups := make([]*wire.MemberUpdate, n)
		global := map[string]string{"displayname": "start", "avatar_url": ""}
		for i := range ups {
			u := &wire.MemberUpdate{Version: uint64(2 * (i + 1)), // gaps: not every profile version reaches rooms
				Mode: wire.Propagate(rapid.IntRange(0, 2).Draw(t, "mode")), OldDisplayname: global["displayname"], OldAvatarUrl: global["avatar_url"]}
			if rapid.Bool().Draw(t, "setsName") || !rapid.Bool().Draw(t, "setsAvatar") {
				u.SetsDisplayname, u.Displayname = true, rapid.SampledFrom([]string{"", "a", "b", "c"}).Draw(t, "name")
				global["displayname"] = u.Displayname
			} else {
				u.SetsAvatarUrl, u.AvatarUrl = true, rapid.SampledFrom([]string{"", "mxc://s/1", "mxc://s/2"}).Draw(t, "avatar")
				global["avatar_url"] = u.AvatarUrl
			}
			ups[i] = u
		}
		own := rapid.Bool().Draw(t, "roomHasOwnName")
		start := func() (*memberRec, map[string]any) {
			rec := &memberRec{}
			content := map[string]any{"membership": "join", "displayname": "start", "reason": "r"}
			if own {
				rec.Own = map[string]bool{"displayname": true}
				content["displayname"] = "room nick"
			}
			return rec, content
		}

		// The model: every version once, in order.
		mrec, model := start()
		applyVersions(mrec, model, ups, preserve)

		// The protocol over a faulty network.
		rec, content := start()
		var acked uint64
		type msg struct {
			ack uint64
			ups []*wire.MemberUpdate
		}
		var net []msg
		send := func() {
			var m msg
			for _, u := range ups {
				if u.Version > acked {
					m.ups = append(m.ups, u)
				}
			}
			net = append(net, m)
		}
		send()
		var applied []uint64
		for steps := 0; acked < ups[n-1].Version; steps++ {
			if steps > 500 {
				t.Fatalf("no convergence: acked %d of %d", acked, ups[n-1].Version)
			}
			if len(net) == 0 || rapid.IntRange(0, 5).Draw(t, "timeout") == 0 {
				send() // a resend after a timeout
				continue
			}
			i := rapid.IntRange(0, len(net)-1).Draw(t, "pick") // reordering
			m := net[i]
			switch rapid.IntRange(0, 4).Draw(t, "fate") {
			case 0: // dropped
				net = append(net[:i], net[i+1:]...)
				continue
			case 1: // duplicated: stays in the network
			default:
				net = append(net[:i], net[i+1:]...)
			}
			if m.ups == nil { // an ack reaches the sender
				acked = max(acked, m.ack)
				continue
			}
			before := rec.Version
			events, _ := applyVersions(rec, content, m.ups, preserve)
			if rec.Version < before {
				t.Fatalf("went back from %d to %d", before, rec.Version)
			}
			for _, u := range m.ups {
				if u.Version > before && u.Version <= rec.Version {
					applied = append(applied, u.Version)
				}
			}
			if len(events) > len(m.ups) {
				t.Fatalf("%d events for %d versions", len(events), len(m.ups))
			}
			net = append(net, msg{ack: rec.Version})
		}
		for i := 1; i < len(applied); i++ {
			if applied[i] <= applied[i-1] {
				t.Fatalf("versions applied out of order or twice: %v", applied)
			}
		}
		if len(applied) != n {
			t.Fatalf("applied %d versions, want %d: %v", len(applied), n, applied)
		}
		if fmt.Sprint(content) != fmt.Sprint(model) {
			t.Fatalf("room %v, model %v", content, model)
		}
	})
}
