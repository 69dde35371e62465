package daemon

import (
	"strings"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
)

// logPins says what Load found in the pin directory beyond plain pins to
// adopt: an interrupted migration it completed or rolled back, or a
// migration it started (docs/upgrade.md).
func (d *Daemon) logPins(dp *datapath.Datapath, pinDir string) {
	for _, n := range dp.PinNotes() {
		d.log.Warn(n, "pins", pinDir)
	}
	if from, to, reason, ok := dp.Migrating(); ok {
		d.log.Info("migrating the pinned fast path; the old program forwards until the swap",
			"pins", pinDir, "from", from.String(), "to", to.String(), "why", reason)
	}
}

// completeMigration finishes a migration Load started, once the desired
// state is in the new maps: the connection table and counters are copied,
// the new program swapped in, the old pins retired.
func (d *Daemon) completeMigration(dp *datapath.Datapath) error {
	if _, _, _, ok := dp.Migrating(); !ok {
		return nil
	}
	rep, err := dp.CompleteMigration()
	if err != nil {
		return err
	}
	d.log.Info("migrated the pinned fast path", "from", rep.From.String(), "to", rep.To.String(),
		"connections_kept", rep.Kept, "connections_dropped", rep.Dropped, "connections_late", rep.Late)
	if len(rep.Reset) > 0 {
		d.log.Warn("counters reset by the migration: "+strings.Join(rep.Reset, "; "), "from", rep.From.String())
	}
	return nil
}
