package main

import (
	"testing"
	"time"
)

func TestHumanUnits(t *testing.T) {
	tests := []struct{ got, want string }{
		{humanCount(0), "0"},
		{humanCount(999), "999"},
		{humanCount(1000), "1.0k"},
		{humanCount(1234), "1.2k"},
		{humanCount(999_949), "999.9k"},
		{humanCount(999_999), "1.0M"},
		{humanCount(12_345_678_901), "12.3G"},
		{humanPPS(1234), "1.2k pps"},
		{humanPPS(0.5), "0.5 pps"},
		{humanBytes(950), "950 B"},
		{humanBytes(3.4e6), "3.4 MB"},
		{humanBPS(3.4e6), "3.4 MB/s"},
		{humanBPS(1.25e9), "1.2 GB/s"},
		{humanDuration(1500 * time.Microsecond), "1.5ms"},
		{humanDuration(3*time.Hour + 2*time.Minute + 10*time.Second), "3h2m"},
		{humanDuration(90 * time.Second), "1m30s"},
		{plural(1, "backend"), "1 backend"},
		{plural(0, "backend"), "0 backends"},
	}
	for i, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("case %d: got %q, want %q", i, tt.got, tt.want)
		}
	}
}
