package federation

import (
	"context"
	"io"
	"log/slog"
	"sync"

	"github.com/matrix-org/util"
	"github.com/sirupsen/logrus"
)

// libraryLogger returns a logrus logger for gomatrixserverlib (which finds
// it in a request's context through matrix-org/util) that passes its
// messages to log: warnings and errors as warnings, the rest at debug.
func libraryLogger(log *slog.Logger) *logrus.Entry {
	l := logrus.New()
	l.Out = io.Discard
	l.Level = logrus.WarnLevel
	if log.Enabled(context.Background(), slog.LevelDebug) {
		l.Level = logrus.DebugLevel
	}
	l.AddHook(slogHook{log: log})
	return logrus.NewEntry(l)
}

// slogHook writes logrus entries to a slog.Logger.
type slogHook struct{ log *slog.Logger }

// Levels returns every level: the logger's own level filters.
func (slogHook) Levels() []logrus.Level { return logrus.AllLevels }

// Fire writes e to the slog logger with its fields.
func (h slogHook) Fire(e *logrus.Entry) error {
	level := slog.LevelDebug
	if e.Level <= logrus.WarnLevel {
		level = slog.LevelWarn
	}
	attrs := make([]any, 0, 2*len(e.Data)+2)
	attrs = append(attrs, "from", "gomatrixserverlib")
	for k, v := range e.Data {
		attrs = append(attrs, k, v)
	}
	ctx := e.Context
	if ctx == nil {
		ctx = context.Background()
	}
	h.log.Log(ctx, level, e.Message, attrs...)
	return nil
}

// WithLibraryLogger returns ctx carrying the logger gomatrixserverlib
// looks for, which writes to the server's log: calls into the library made
// outside a request (a join, an invite) log there, not to stderr.
func (s *Server) WithLibraryLogger(ctx context.Context) context.Context {
	return util.ContextWithLogger(ctx, s.libLog)
}

// quietGlobalLogger keeps gomatrixserverlib's calls that log to logrus's
// global logger (those made with a background context) to warnings.
var quietGlobalLogger sync.Once
