package testpacket

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
)

// XDP verdicts as BPF_PROG_RUN reports them.
const (
	XDPAborted  uint32 = 0
	XDPDrop     uint32 = 1
	XDPPass     uint32 = 2
	XDPTX       uint32 = 3
	XDPRedirect uint32 = 4
)

// VerdictNames names the XDP verdicts, for failure messages.
var VerdictNames = map[uint32]string{
	XDPAborted: "XDP_ABORTED", XDPDrop: "XDP_DROP", XDPPass: "XDP_PASS", XDPTX: "XDP_TX", XDPRedirect: "XDP_REDIRECT",
}

// Run pushes one frame through prog with BPF_PROG_RUN and returns the
// verdict and the frame as the program left it. in is not modified.
func Run(tb testing.TB, prog *ebpf.Program, in []byte) (uint32, []byte) {
	tb.Helper()
	opts := ebpf.RunOptions{Data: bytes.Clone(in), DataOut: make([]byte, len(in)+512)}
	ret, err := prog.Run(&opts)
	if err != nil {
		tb.Fatalf("BPF_PROG_RUN: %v", err)
	}
	return ret, opts.DataOut
}

// HexDiff renders two frames side by side, 16 bytes a row, marking rows
// that differ.
func HexDiff(got, want []byte) string {
	var sb strings.Builder
	n := max(len(got), len(want))
	for off := 0; off < n; off += 16 {
		g := got[min(off, len(got)):min(off+16, len(got))]
		w := want[min(off, len(want)):min(off+16, len(want))]
		mark := "  "
		if !bytes.Equal(g, w) {
			mark = "!="
		}
		fmt.Fprintf(&sb, "%04x %s got %-32s want %s\n", off, mark, hex.EncodeToString(g), hex.EncodeToString(w))
	}
	return sb.String()
}
