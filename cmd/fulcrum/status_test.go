package main

import (
	"bytes"
	"testing"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

func TestStatus(t *testing.T) {
	d := startDaemon(t)
	d.run(t, "status").checkGolden(t, "status.golden")
	if got := d.fake.lastCall(); got != "Status" {
		t.Errorf("daemon call %q, want Status", got)
	}
	checkJSON(t, d.run(t, "-o", "json", "status"), newFake().status)
}

// TestStatusEmpty: what a status with nothing filled in reads as.
func TestStatusEmpty(t *testing.T) {
	var buf bytes.Buffer
	if err := printStatus(&buf, api.Status{}, testNow); err != nil {
		t.Fatal(err)
	}
	golden(t, "status_empty.golden", buf.String())
}
