package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// A migration moves an instance's pins to this build's layout while the
// old program forwards (docs/upgrade.md has the operator's view):
//
//  1. load: the new maps and program are loaded beside the old ones,
//     pinned in DIR_next (Load);
//  2. fill: the daemon writes the configuration maps from its desired
//     state, as on any start (the reconciler's Apply);
//  3. copy: the connection table is copied with each entry's backend id
//     translated (old id → VIP and address → new id), and the counters
//     whose meaning is unchanged with it (CompleteMigration);
//  4. swap: every pinned XDP link is pointed at the new program, one
//     atomic update each; entries the old program made since the copy are
//     copied after it;
//  5. retire: the link pins move into DIR_next, DIR becomes DIR_old,
//     DIR_next becomes DIR, and DIR_old is removed.
//
// A crash before the swap leaves the old program forwarding from DIR: the
// next start removes DIR_next (a roll back) and migrates again. A crash
// from the swap on leaves the new program forwarding from DIR_next's maps:
// the next start finishes the swap, the late copy and the retirement (a
// roll forward). recoverPins tells the two apart by which program the
// links run.

// pinMode is what Load does with an instance's pin directory.
type pinMode int

const (
	pinsFresh   pinMode = iota // no pins: load and pin
	pinsAdopt                  // pins of this layout that fit: take them over
	pinsMigrate                // pins of an older layout, or that do not fit
)

// migration is a started migration, until CompleteMigration.
type migration struct {
	from, to Layout
	reason   string
	dir      string // the instance's pin directory, where the old pins are
	next     string // where the new ones are loaded
	attach   []pendingAttach
}

// pendingAttach is an Attach held back until the swap.
type pendingAttach struct {
	ifindex int
	mode    AttachMode
}

// nextDir and oldDir are siblings of the instance's pin directory. bpffs
// refuses names with a dot, and an instance name has no '_' (config), so
// no instance's directory can be one of them.
func nextDir(dir string) string { return dir + "_next" }
func oldDir(dir string) string  { return dir + "_old" }

// planPins recovers from an interrupted migration, then decides what Load
// does with the pins in dir: the mode, the directory to load into, and for
// a migration its description.
func (d *Datapath) planPins(spec *ebpf.CollectionSpec, dir string) (pinMode, string, error) {
	cur := currentLayout()
	note, err := recoverPins(dir, cur)
	if err != nil {
		return 0, "", err
	}
	if note != "" {
		d.notes = append(d.notes, note)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, "", fmt.Errorf("create pin directory: %w", err)
	}
	found, ok, err := ReadLayout(dir)
	if err != nil {
		return 0, "", err
	}
	switch {
	case !ok:
		return pinsFresh, dir, nil
	case found.Version > cur.Version:
		return 0, "", downgradeError(dir, found, cur)
	case found.Version < OldestLayout:
		return 0, "", fmt.Errorf("the pins in %s have %s, older than the oldest this build migrates from (layout %d): upgrade through an earlier release first, or run 'fulcrum detach' for this instance (this drops the connection table)", dir, found, OldestLayout)
	}
	misfits, err := misfits(spec, dir)
	if err != nil {
		return 0, "", err
	}
	if found.Version == cur.Version && len(misfits) == 0 {
		return pinsAdopt, dir, nil
	}
	reason := fmt.Sprintf("layout %d to %d", found.Version, cur.Version)
	if len(misfits) > 0 {
		reason += "; " + strings.Join(misfits, "; ")
	}
	next := nextDir(dir)
	if err := os.MkdirAll(next, 0o700); err != nil {
		return 0, "", fmt.Errorf("create pin directory for the migration: %w", err)
	}
	d.migration = &migration{from: found, to: cur, reason: reason, dir: dir, next: next}
	return pinsMigrate, next, nil
}

// misfits lists the pinned maps in dir that the spec cannot take over.
func misfits(spec *ebpf.CollectionSpec, dir string) ([]string, error) {
	var out []string
	for name, ms := range spec.Maps {
		if ms.Pinning != ebpf.PinByName {
			continue
		}
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), nil)
		if errors.Is(err, os.ErrNotExist) {
			out = append(out, name+": not pinned")
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("open pinned map %s: %w", name, err)
		}
		err = ms.Compatible(m)
		m.Close()
		if err != nil {
			out = append(out, fmt.Sprintf("%s: %v", name, err))
		}
	}
	slices.Sort(out)
	return out, nil
}

// settlePins finishes Load's work on the pins once the objects are loaded.
func (d *Datapath) settlePins(mode pinMode, dir string) error {
	switch mode {
	case pinsAdopt:
		if err := d.adopt(); err != nil {
			return fmt.Errorf("adopt pinned state in %s: %w", dir, err)
		}
	case pinsMigrate:
		dir = d.migration.next
	}
	if err := pinProgram(dir, d.objs.FulcrumBalancer); err != nil {
		return err
	}
	if err := writeLayout(dir, currentLayout()); err != nil {
		return err
	}
	if mode == pinsMigrate {
		killPoint(stepLoad)
	}
	return nil
}

// Migrating reports whether Load started a migration, which the caller
// completes with CompleteMigration once it has written the desired state;
// until then Attach only records the interfaces.
func (d *Datapath) Migrating() (from, to Layout, reason string, ok bool) {
	if d.migration == nil {
		return Layout{}, Layout{}, "", false
	}
	return d.migration.from, d.migration.to, d.migration.reason, true
}

// PinNotes returns what Load did about an interrupted migration it found,
// for the log.
func (d *Datapath) PinNotes() []string {
	return d.notes
}

// MigrationReport says what a migration carried over.
type MigrationReport struct {
	From, To Layout
	// Kept is how many connection entries were copied, Dropped how many
	// named a backend that is gone or stale (their flows would have been
	// re-hashed anyway), Late how many the old program made between the
	// copy and the swap.
	Kept, Dropped, Late int
	// Reset names the counters that were not carried over, and why.
	Reset []string
}

// CompleteMigration finishes the migration Load started, after the caller
// wrote the desired state (steps 3 to 5 above): it copies the connection
// table and the counters, swaps the new program into every pinned XDP link
// and into the interfaces given to Attach, and retires the old pins.
func (d *Datapath) CompleteMigration() (MigrationReport, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := d.migration
	if m == nil {
		return MigrationReport{}, errors.New("complete migration: no migration started")
	}
	killPoint(stepFill)
	rep := MigrationReport{From: m.from, To: m.to}
	old, err := openTables(m.dir)
	if err != nil {
		return rep, err
	}
	defer old.close()
	cur := tablesOf(&d.objs)
	if rep.Kept, rep.Dropped, err = copyConntrack(old, cur, false); err != nil {
		return rep, err
	}
	if rep.Reset, err = copyCounters(old, cur); err != nil {
		return rep, err
	}
	killPoint(stepCopy)

	links, err := updateLinks(d.objs.FulcrumBalancer, m.dir, m.next)
	if err != nil {
		return rep, err
	}
	for _, a := range m.attach {
		if l, ok := links[a.ifindex]; ok {
			d.links[a.ifindex] = l
			delete(links, a.ifindex)
			continue
		}
		if err := d.attachNew(a.ifindex, a.mode, m.next); err != nil {
			closeLinks(links)
			return rep, err
		}
	}
	closeLinks(links) // pinned links of interfaces not configured here
	killPoint(stepSwap)

	if rep.Late, _, err = copyConntrack(old, cur, true); err != nil {
		return rep, err
	}
	if err := retire(m.dir, m.next, true); err != nil {
		return rep, err
	}
	d.migration = nil
	// The links were opened from pins that have moved since: open them
	// again from where they are, so Detach can unpin them.
	for ifindex, l := range d.links {
		nl, err := link.LoadPinnedLink(linkPin(d.pinDir, ifindex), nil)
		if err != nil {
			return rep, fmt.Errorf("open migrated xdp link of ifindex %d: %w", ifindex, err)
		}
		l.Close()
		d.links[ifindex] = nl
	}
	return rep, nil
}

// recoverPins finishes or undoes a migration a crash interrupted (see the
// steps above), and says which it did; "" when there was none.
func recoverPins(dir string, cur Layout) (string, error) {
	next, old := nextDir(dir), oldDir(dir)
	// An empty dir is no pins (an earlier Load may have made it).
	hasDir, hasNext, hasOld := hasPins(dir), exists(next), exists(old)
	switch {
	case hasDir && hasNext:
		nl, ok, err := ReadLayout(next)
		if err != nil {
			return "", err
		}
		if ok && nl.Version > cur.Version {
			return "", downgradeError(next, nl, cur)
		}
		swapped, err := swapStarted(dir, next)
		if err != nil {
			return "", err
		}
		if !swapped {
			if err := os.RemoveAll(next); err != nil {
				return "", fmt.Errorf("roll back an interrupted migration: %w", err)
			}
			return fmt.Sprintf("rolled back a migration interrupted before its swap: removed %s; the old pins forwarded throughout", next), nil
		}
		if err := finishSwap(dir, next); err != nil {
			return "", fmt.Errorf("complete an interrupted migration: %w", err)
		}
		return fmt.Sprintf("completed a migration interrupted after its swap: %s's pins are now %s", next, dir), nil
	case hasNext && hasOld:
		if err := os.Rename(next, dir); err != nil {
			return "", fmt.Errorf("complete an interrupted migration: %w", err)
		}
		if err := os.RemoveAll(old); err != nil {
			return "", fmt.Errorf("complete an interrupted migration: %w", err)
		}
		return fmt.Sprintf("completed a migration interrupted while retiring the old pins: renamed %s to %s, removed %s", next, dir, old), nil
	case hasOld:
		if err := os.RemoveAll(old); err != nil {
			return "", fmt.Errorf("complete an interrupted migration: %w", err)
		}
		return fmt.Sprintf("completed a migration interrupted while retiring the old pins: removed %s", old), nil
	case hasNext:
		// The pins it was to replace are gone (detached meanwhile); it
		// never ran.
		if err := os.RemoveAll(next); err != nil {
			return "", fmt.Errorf("remove an abandoned migration: %w", err)
		}
		return fmt.Sprintf("removed %s, a migration whose old pins were removed", next), nil
	}
	return "", nil
}

// swapStarted reports whether a migration from dir to next reached its
// swap: a link pin moved to next, or a link that runs next's program.
func swapStarted(dir, next string) (bool, error) {
	if pins, _ := linkPins(next); len(pins) > 0 {
		return true, nil
	}
	prog, err := ebpf.LoadPinnedProgram(filepath.Join(next, programPin), nil)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil // killed before the program was pinned
	}
	if err != nil {
		return false, fmt.Errorf("open the migration's program: %w", err)
	}
	defer prog.Close()
	id, err := programID(prog)
	if err != nil {
		return false, err
	}
	pins, err := linkPins(dir)
	if err != nil {
		return false, err
	}
	for _, p := range pins {
		l, err := link.LoadPinnedLink(p, nil)
		if err != nil {
			continue
		}
		li, err := l.Info()
		l.Close()
		if err == nil && li.Program == id {
			return true, nil
		}
	}
	return false, nil
}

// finishSwap completes a migration from dir to next that a crash
// interrupted at or after its swap: every link gets next's program, the
// late entries are copied, and the old pins are retired.
func finishSwap(dir, next string) error {
	prog, err := ebpf.LoadPinnedProgram(filepath.Join(next, programPin), nil)
	if err != nil {
		return fmt.Errorf("open the migration's program: %w", err)
	}
	defer prog.Close()
	links, err := updateLinks(prog, dir, next)
	if err != nil {
		return err
	}
	closeLinks(links)
	old, err := openTables(dir)
	if err != nil {
		return err
	}
	defer old.close()
	cur, err := openTables(next)
	if err != nil {
		return err
	}
	defer cur.close()
	if _, _, err := copyConntrack(old, cur, true); err != nil {
		return err
	}
	return retire(dir, next, false)
}

// linkPins lists the XDP link pins in dir.
func linkPins(dir string) ([]string, error) {
	out, err := filepath.Glob(filepath.Join(dir, "xdp_link_ifindex_*"))
	if err != nil {
		return nil, fmt.Errorf("list link pins in %s: %w", dir, err)
	}
	return out, nil
}

// updateLinks points every live XDP link pinned in dirs at prog (each with
// one atomic update; a link that runs it already is left alone) and
// returns them by ifindex. Links of interfaces that are gone are unpinned.
func updateLinks(prog *ebpf.Program, dirs ...string) (map[int]link.Link, error) {
	id, err := programID(prog)
	if err != nil {
		return nil, err
	}
	out := make(map[int]link.Link)
	for _, dir := range dirs {
		pins, err := linkPins(dir)
		if err != nil {
			closeLinks(out)
			return nil, err
		}
		for _, p := range pins {
			l, err := link.LoadPinnedLink(p, nil)
			if err != nil {
				closeLinks(out)
				return nil, fmt.Errorf("load pinned xdp link %s: %w", p, err)
			}
			li, err := l.Info()
			if err != nil || li.XDP() == nil || li.XDP().Ifindex == 0 {
				l.Unpin() // defunct: its interface went away
				l.Close()
				continue
			}
			if li.Program != id {
				if err := l.Update(prog); err != nil {
					l.Close()
					closeLinks(out)
					return nil, fmt.Errorf("update pinned xdp link %s: %w", p, err)
				}
			}
			out[int(li.XDP().Ifindex)] = l
		}
	}
	return out, nil
}

// programID is a loaded program's kernel ID, which a link's info names.
func programID(prog *ebpf.Program) (ebpf.ProgramID, error) {
	info, err := prog.Info()
	if err != nil {
		return 0, fmt.Errorf("balancer program info: %w", err)
	}
	id, ok := info.ID()
	if !ok {
		return 0, errors.New("balancer program info: the kernel gave no program ID")
	}
	return id, nil
}

func closeLinks(links map[int]link.Link) {
	for _, l := range links {
		l.Close()
	}
}

// retire makes next the instance's pins (step 5): the link pins move into
// it, dir becomes dir_old, next becomes dir, and dir_old goes. Each rename
// is atomic, and recoverPins completes the sequence from any point. The
// test hooks stop only a migration, not a recovery (hooks).
func retire(dir, next string, hooks bool) error {
	pins, err := linkPins(dir)
	if err != nil {
		return err
	}
	for _, p := range pins {
		if err := os.Rename(p, filepath.Join(next, filepath.Base(p))); err != nil {
			return fmt.Errorf("retire old pins: %w", err)
		}
	}
	if hooks {
		killPoint(stepRetireLinks)
	}
	if err := os.Rename(dir, oldDir(dir)); err != nil {
		return fmt.Errorf("retire old pins: %w", err)
	}
	if hooks {
		killPoint(stepRetireOld)
	}
	if err := os.Rename(next, dir); err != nil {
		return fmt.Errorf("retire old pins: %w", err)
	}
	if hooks {
		killPoint(stepRetireNew)
	}
	if err := os.RemoveAll(oldDir(dir)); err != nil {
		return fmt.Errorf("retire old pins: %w", err)
	}
	return nil
}
