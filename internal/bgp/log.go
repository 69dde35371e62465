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

func (l *logger) emit(level slog.Level, msg string, fields gobgplog.Fields) {
	attrs := make([]any, 0, 2*len(fields))
	for k, v := range fields {
		if k != gobgplog.FieldFacility {
			attrs = append(attrs, k, v)
		}
	}
	l.log.Log(context.Background(), level, "bgp: gobgp: "+msg, attrs...)
}

// Panic and Fatal are logged as errors and return: GoBGP calls them for
// its own logic bugs, and a library's bug must not end the daemon (the
// fast path runs on without the speaker).
func (l *logger) Panic(msg string, f gobgplog.Fields) { l.emit(slog.LevelError, msg, f) }
func (l *logger) Fatal(msg string, f gobgplog.Fields) { l.emit(slog.LevelError, msg, f) }
func (l *logger) Error(msg string, f gobgplog.Fields) { l.emit(slog.LevelError, msg, f) }
func (l *logger) Warn(msg string, f gobgplog.Fields)  { l.emit(slog.LevelWarn, msg, f) }
func (l *logger) Info(msg string, f gobgplog.Fields)  { l.emit(slog.LevelInfo, msg, f) }
func (l *logger) Debug(msg string, f gobgplog.Fields) { l.emit(slog.LevelDebug, msg, f) }

// SetLevel is ignored: the daemon's handler filters by its own level.
func (l *logger) SetLevel(gobgplog.LogLevel) {}

// GetLevel tells GoBGP whether building debug messages is worth it.
func (l *logger) GetLevel() gobgplog.LogLevel {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		return gobgplog.DebugLevel
	}
	return gobgplog.InfoLevel
}
