package actors

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"persona/wire"
)

func roomAliases(t *testing.T, h *Service, room string) []string {
	t.Helper()
	list, err := h.RoomAliases(context.Background(), room)
	if err != nil || list.Error != nil {
		t.Fatalf("aliases of %s: %v %v", room, err, list.GetError())
	}
	return list.Aliases
}

func aliasAsk(t *testing.T, h *Service, alias string, m proto.Message) *wire.AliasReply {
	t.Helper()
	r, err := h.Request(context.Background(), KindAlias, alias, m)
	reply, ok := r.(*wire.AliasReply)
	if err != nil || !ok || reply.Error != nil {
		t.Fatalf("%T %s: %v %v", m, alias, err, r)
	}
	return reply
}

// The index follows every put and delete, whichever partitions the aliases
// fall in, and a moved alias leaves its old room's list.
func TestAliasIndexFollowsPutAndDelete(t *testing.T) {
	t.Parallel()
	h, st := newTestHost(t, t.TempDir(), time.Minute)
	defer st.Close()
	defer h.Stop()
	const u, room, other = "@alice:" + server, "!a:" + server, "!b:" + server
	var want []string
	for _, name := range []string{"#c:", "#a:", "#b:", "#d:", "#e:"} {
		aliasAsk(t, h, name+server, &wire.PutAlias{Alias: name + server, RoomId: room, UserId: u})
		want = append(want, name+server)
	}
	aliasAsk(t, h, "#x:"+server, &wire.PutAlias{Alias: "#x:" + server, RoomId: other, UserId: u})
	slices.Sort(want)
	if got := roomAliases(t, h, room); !slices.Equal(got, want) {
		t.Fatalf("aliases = %v, want %v", got, want)
	}
	aliasAsk(t, h, "#a:"+server, &wire.DeleteAlias{Alias: "#a:" + server, UserId: u})
	aliasAsk(t, h, "#a:"+server, &wire.PutAlias{Alias: "#a:" + server, RoomId: other, UserId: u})
	if got := roomAliases(t, h, room); !slices.Equal(got, want[1:]) {
		t.Fatalf("aliases after a move = %v, want %v", got, want[1:])
	}
	if got := roomAliases(t, h, other); !slices.Equal(got, []string{"#a:" + server, "#x:" + server}) {
		t.Fatalf("other room's aliases = %v", got)
	}
	if got := roomAliases(t, h, "!none:"+server); got == nil || len(got) != 0 {
		t.Fatalf("aliases of a room without any = %#v, want empty", got)
	}
}
