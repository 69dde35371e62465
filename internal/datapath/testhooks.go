package datapath

import (
	"os"
	"syscall"
)

// Test hooks. The upgrade tests (internal/daemon upgrade_e2e_test.go) run
// the real binary, so they steer it through the environment. No operator
// has a reason to set these.
const (
	// TestLayoutEnv makes the build claim another layout version: with the
	// same maps, a higher number is a layout change the tests make
	// themselves, and a lower one meets a newer layout (a downgrade).
	TestLayoutEnv = "FULCRUM_TEST_LAYOUT"
	// TestKillEnv names a migration step; the process kills itself with
	// SIGKILL right after it, as kill -9 would.
	TestKillEnv = "FULCRUM_TEST_MIGRATE_KILL_AFTER"
)

// The migration's steps, in order, as TestKillEnv names them.
const (
	stepLoad        = "load"         // new maps and program pinned in DIR_next
	stepFill        = "fill"         // configuration maps written
	stepCopy        = "copy"         // connection table and counters copied
	stepSwap        = "swap"         // every pinned XDP link runs the new program
	stepRetireLinks = "retire-links" // link pins moved into DIR_next
	stepRetireOld   = "retire-old"   // DIR renamed DIR_old
	stepRetireNew   = "retire-new"   // DIR_next renamed DIR
)

// MigrationSteps lists the steps a test may kill a migration after.
var MigrationSteps = []string{stepLoad, stepFill, stepCopy, stepSwap, stepRetireLinks, stepRetireOld, stepRetireNew}

// killPoint ends the process at once if a test asked for it after step.
func killPoint(step string) {
	if os.Getenv(TestKillEnv) != step {
		return
	}
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal is on its way
}
