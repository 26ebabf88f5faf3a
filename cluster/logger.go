package cluster

import (
	"bytes"
	"context"
	"log"
	"log/slog"
	"strings"
)

// memberlistLogger returns the *log.Logger memberlist writes to: each line
// goes to l at the level its "[LEVEL]" prefix names, and onLine sees every
// message (without prefix) first.
func memberlistLogger(l *slog.Logger, onLine func(string)) *log.Logger {
	return log.New(&logWriter{log: l, onLine: onLine}, "", 0)
}

// logWriter turns memberlist's log lines into slog records.
type logWriter struct {
	log    *slog.Logger
	onLine func(string)
}

// Write takes one or more lines of memberlist's log ("[WARN] memberlist:
// message").
func (w *logWriter) Write(p []byte) (int, error) {
	for line := range bytes.Lines(p) {
		level, msg := parseLogLine(string(bytes.TrimRight(line, "\r\n")))
		if msg == "" {
			continue
		}
		if w.onLine != nil {
			w.onLine(msg)
		}
		w.log.Log(context.Background(), level, msg, "component", "memberlist")
	}
	return len(p), nil
}

// parseLogLine splits a memberlist log line into its level and its message
// without the "[LEVEL] memberlist: " prefix; a line with no level is info.
func parseLogLine(line string) (slog.Level, string) {
	level := slog.LevelInfo
	if rest, ok := strings.CutPrefix(line, "["); ok {
		if tag, msg, ok := strings.Cut(rest, "] "); ok {
			switch tag {
			case "DEBUG", "TRACE":
				level = slog.LevelDebug
			case "INFO":
				level = slog.LevelInfo
			case "WARN":
				level = slog.LevelWarn
			case "ERR", "ERROR":
				level = slog.LevelError
			}
			line = msg
		}
	}
	line = strings.TrimPrefix(line, "memberlist: ")
	return level, strings.TrimSpace(line)
}
