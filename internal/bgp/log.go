package bgp

import (
	"context"
	"log/slog"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

// logger sends GoBGP's log to the daemon's slog logger. GoBGP logs session
// events at info and much chatter at debug; the daemon's level decides what
// is kept.
type logger struct{ log *slog.Logger }

func (l *logger) attrs(fields gobgplog.Fields) []any {
	out := make([]any, 0, 2*len(fields))
	for k, v := range fields {
		if k == gobgplog.FieldFacility {
			continue
		}
		out = append(out, k, v)
	}
	return out
}

// Panic and Fatal are logged as errors and return: GoBGP calls them for
// its own logic bugs, and a library's bug must not end the daemon (the
// fast path runs on without the speaker).
func (l *logger) Panic(msg string, fields gobgplog.Fields) {
	l.log.Error("bgp: gobgp: "+msg, l.attrs(fields)...)
}

func (l *logger) Fatal(msg string, fields gobgplog.Fields) {
	l.log.Error("bgp: gobgp: "+msg, l.attrs(fields)...)
}

func (l *logger) Error(msg string, fields gobgplog.Fields) {
	l.log.Error("bgp: gobgp: "+msg, l.attrs(fields)...)
}

func (l *logger) Warn(msg string, fields gobgplog.Fields) {
	l.log.Warn("bgp: gobgp: "+msg, l.attrs(fields)...)
}

func (l *logger) Info(msg string, fields gobgplog.Fields) {
	l.log.Info("bgp: gobgp: "+msg, l.attrs(fields)...)
}

func (l *logger) Debug(msg string, fields gobgplog.Fields) {
	l.log.Debug("bgp: gobgp: "+msg, l.attrs(fields)...)
}

// SetLevel is ignored: the daemon's handler filters by its own level.
func (l *logger) SetLevel(gobgplog.LogLevel) {}

// GetLevel tells GoBGP whether building debug messages is worth it.
func (l *logger) GetLevel() gobgplog.LogLevel {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		return gobgplog.DebugLevel
	}
	return gobgplog.InfoLevel
}
