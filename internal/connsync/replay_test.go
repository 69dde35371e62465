package connsync

import "testing"

func TestWindow(t *testing.T) {
	var w window
	accept := func(seq uint64, want bool) {
		t.Helper()
		if got := w.check(seq); got != want {
			t.Fatalf("seq %d (top %d): accepted %v, want %v", seq, w.top, got, want)
		}
		if want {
			w.mark(seq)
		}
	}
	accept(0, false) // never sent
	accept(1, true)
	accept(1, false) // the same twice
	accept(5, true)
	accept(3, true) // reordered, within the window
	accept(3, false)
	accept(2, true)
	accept(4, true)
	accept(5, false)
	accept(5+windowBits-1, true)
	accept(5, false) // at the window's trailing edge, seen
	accept(6, true)  // at the trailing edge, unseen
	accept(5+windowBits, true)
	accept(5, false) // now behind the window (top-windowBits): too old
	accept(4, false)
	accept(6, false) // the trailing edge, seen above
	accept(7, true)  // the trailing edge's neighbour, never seen
	// A jump past the whole window clears it: nothing from before is
	// accepted, everything new inside it is.
	top := w.top + 10*windowBits
	accept(top, true)
	accept(top-windowBits+1, true)
	accept(top-windowBits, false)
	accept(top-1, true)
	accept(top, false)
	// Slots the window slid over are free again, for their new numbers.
	accept(top+1, true)
	accept(top+windowBits+1, true)
	accept(top+2, true)
}
