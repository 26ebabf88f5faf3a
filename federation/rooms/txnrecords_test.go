package rooms_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"persona/config"
	"persona/internal/testnode"
)

// A resend of a transaction is answered from its record, and applies
// nothing, while the record lives (federation.inbound_txn_ttl); past it
// the record is swept, and a resend is taken as new: its PDUs, held
// already, are answered alike.
func TestTransactionRecordsExpire(t *testing.T) {
	t.Parallel()
	const ttl = 400 * time.Millisecond
	a, b, room, bob := twoServers(t, func(c *config.Config) { c.Federation.InboundTxnTTL = ttl })
	tip := b.Tip(t, a, room, bob)
	rename := tip.Build(t, b.Federation().Identity(), bob, "m.room.member", &bob, map[string]any{"membership": "join", "displayname": "Bob kept"})
	body, err := json.Marshal(gomatrixserverlib.Transaction{TransactionID: "kept", Origin: spec.ServerName(b.Config.ServerName),
		Destination: spec.ServerName(a.Config.ServerName), OriginServerTS: spec.AsTimestamp(time.Now()), PDUs: []json.RawMessage{rename.JSON()}})
	if err != nil {
		t.Fatal(err)
	}
	send := func() string {
		t.Helper()
		status, answer := testnode.DoFederation(t, b.FederationRequest(t, a, testnode.Request{Method: http.MethodPut, URI: "/_matrix/federation/v1/send/kept", Body: body}))
		if status != http.StatusOK {
			t.Fatalf("send: %d %s", status, answer)
		}
		return string(answer)
	}
	first := send()
	if want := `{"pdus":{"` + rename.EventID() + `":{}}}`; first != want {
		t.Fatalf("first answer %s, want %s", first, want)
	}
	if again := send(); again != first || received(t, a, "duplicate") != 1 {
		t.Fatalf("a resend at once: %s, %v answered from the record; want %s from the record", again, received(t, a, "duplicate"), first)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		time.Sleep(ttl / 2)
		if later := send(); later != first {
			t.Fatalf("a resend later: %s, want %s", later, first)
		}
		if applied := received(t, a, "applied"); applied >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the record of a transaction outlived its ttl (%s) by 10 s", ttl)
		}
	}
}

// received is node n's persona_federation_transactions_received_total for
// result, from its /metrics.
func received(t *testing.T, n *testnode.Node, result string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + n.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	want := `persona_federation_transactions_received_total{result="` + result + `"} `
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), want); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}
