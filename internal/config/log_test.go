package config

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

func TestLogNewLogger(t *testing.T) {
	for _, lv := range logLevels {
		if got := (Log{Level: lv}).SlogLevel(); !strings.EqualFold(got.String(), lv) {
			t.Errorf("level %q: %s", lv, got)
		}
	}
	if got := (Log{}).SlogLevel(); got != slog.LevelInfo {
		t.Errorf("empty level: %s, want INFO", got)
	}

	var buf bytes.Buffer
	level := new(slog.LevelVar)
	log := Log{Level: "warn", Format: "json"}.NewLogger(&buf, level)
	log.Info("dropped")
	log.Warn("kept", "k", 1)
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil || line["msg"] != "kept" {
		t.Fatalf("json logger at warn wrote %q (%v), want one JSON line for the warning", buf.String(), err)
	}
	level.Set(slog.LevelInfo) // a reload
	buf.Reset()
	log.Info("now kept")
	if !strings.Contains(buf.String(), "now kept") {
		t.Errorf("after the level changed to info: %q", buf.String())
	}

	buf.Reset()
	Log{}.NewLogger(&buf, new(slog.LevelVar)).Info("hello")
	if !strings.HasPrefix(buf.String(), "time=") || !strings.Contains(buf.String(), "msg=hello") {
		t.Errorf("default text logger wrote %q", buf.String())
	}
}
