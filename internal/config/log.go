package config

import (
	"io"
	"log/slog"
)

// SlogLevel is Level as a slog.Level. Parse accepts only logLevels, and
// an empty Level (a Log not from Parse) is info.
func (l Log) SlogLevel() slog.Level {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(l.Level))
	return lv
}

// NewLogger returns a logger that writes to w in l's format, at the level
// lv holds, which it sets to l's: a reload sets lv again. The daemon and
// its VRRP agent build theirs with it, so that their lines look alike.
func (l Log) NewLogger(w io.Writer, lv *slog.LevelVar) *slog.Logger {
	lv.Set(l.SlogLevel())
	opts := &slog.HandlerOptions{Level: lv}
	if l.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
