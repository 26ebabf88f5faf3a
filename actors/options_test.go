package actors

import (
	"strings"
	"testing"
	"time"

	"persona/config"
	"persona/host"
	"persona/storage"
)

// Options are checked before any actor starts, and a zero field takes its
// default.
func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	st, err := storage.Open(t.TempDir(), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cfg := config.Default()
	cfg.ServerName = server
	for _, c := range []struct {
		opts Options
		want string
	}{
		{Options{PropagationIdle: -time.Second}, "PropagationIdle"},
		{Options{PresenceTimeout: -time.Second}, "PresenceTimeout"},
		{Options{AckWindow: -time.Millisecond}, "AckWindow"},
		{Options{Host: host.Options{Workers: -1}}, "Workers"},
	} {
		if h, err := NewWith(st, cfg, nil, nil, c.opts); err == nil || !strings.Contains(err.Error(), c.want) {
			if h != nil {
				h.Stop()
			}
			t.Errorf("NewWith(%+v) = %v, want an error naming %s", c.opts, err, c.want)
		}
	}
	if got := (Options{}).withDefaults(); got.PropagationIdle != DefaultOptions().PropagationIdle ||
		got.PresenceTimeout != DefaultOptions().PresenceTimeout || got.AckWindow != DefaultOptions().AckWindow {
		t.Errorf("zero options with defaults = %+v, want %+v", got, DefaultOptions())
	}
}
