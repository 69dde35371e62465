package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

func TestStatusTable(t *testing.T) {
	d := startDaemon(t)
	d.run(t, "status").expect(t, 0, []string{
		"daemon:      fulcrum v1.0.0, instance default\n",
		"config:      /etc/fulcrum/fulcrum.yaml\n",
		"interfaces:  eth0 (ifindex 2, native XDP)\n",
		"vips:        2 (4 backends)\n",
		"vrrp:        master\n",
		"last apply:  never\n",
		"reconcile:   1.5ms\n",
		"adopted:     yes",
		"(3h0m ago)",
	})
	if got := d.fake.lastCall(); got != "Status" {
		t.Errorf("daemon call %q, want Status", got)
	}
}

func TestStatusJSON(t *testing.T) {
	d := startDaemon(t)
	r := d.run(t, "-o", "json", "status")
	r.expect(t, 0, []string{`"instance": "default"`, `"last_reconcile_ns": 1500000`})
	var st api.Status
	decodeJSON(t, r.stdout, &st)
	if st.VRRP != "master" || st.Reconcile != 1500*time.Microsecond || !st.Adopted {
		t.Errorf("decoded %+v", st)
	}
}

func TestStatusEmpty(t *testing.T) {
	var buf bytes.Buffer
	printStatus(&buf, api.Status{}, time.Now())
	for _, want := range []string{"started:     never", "interfaces:  none", "config:      -", "adopted:     no"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("output does not contain %q:\n%s", want, buf.String())
		}
	}
}

func TestStatusArguments(t *testing.T) {
	runCLI(t, "status", "now").expect(t, 2, nil, `fulcrum: status: unexpected argument "now"`)
}
