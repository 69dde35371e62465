package datapath

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// Writing a ring with BPF_MAP_UPDATE_BATCH costs the kernel two copies from
// user memory and an update call per slot: 150–250 ns a slot on this kind
// of VM, 10–16 ms for a ring of 65537 slots, and most of the time of a bulk
// change. A small BPF program loaded for the new ring writes it from inside
// the kernel instead: it copies the table in chunks of chunkSlots (one
// bpf_copy_from_user each) and stores every slot through an array lookup
// (a call: the verifier inlines no lookup in a map made for a map of maps).
// Measured here for M = 65537: the batched update 14 ms; the program about
// 0.5 ms to load (verify and JIT) and 1 ms to run. Loading costs about as
// much as writing a few thousand slots the other way, so small rings, and
// every ring once the kernel refused the program, take the batched update.
//
// The program is a syscall program (BPF_PROG_TYPE_SYSCALL, Linux 5.14),
// sleepable as that type must be, and uses bpf_loop (5.17) and
// bpf_copy_from_user; it runs once, by BPF_PROG_RUN, before the ring is
// swapped in, so the fast path never sees a ring it is writing.

// chunkSlots is how many slots one bpf_loop iteration copies and writes:
// chunkSlots*4 bytes of the callback's stack. The program grows with it,
// and so does its load; below 8 the run grows instead.
const (
	chunkShift = 3
	chunkSlots = 1 << chunkShift
)

// minProgramSlots is the smallest ring written by the program rather than
// by a batched update.
const minProgramSlots = 4096

// fillArgs is the context of the ring writer: the table's address in
// this process and how many whole chunks it holds.
type fillArgs struct {
	Table  uint64
	Chunks uint32
	_      uint32
}

// ringWriterInstructions is the ring writer for ring, by fd:
//
//	main(ctx):  return bpf_loop(ctx->chunks, chunk, &ctx->table on the stack, 0)
//	chunk(i, t): copy chunkSlots slots from *t + i*chunkSlots*4 to the stack;
//	             ring[i*chunkSlots + j] = slot[j] for each j < chunkSlots
func ringWriterInstructions(ring *ebpf.Map) asm.Instructions {
	const buf = -chunkSlots * 4 // the callback's copy of its chunk
	const key = buf - 8         // the callback's lookup key
	// bpf_loop takes its callback by a function pointer, which the
	// verifier accepts only with BTF for each function, the callback's
	// static.
	long := &btf.Int{Name: "long", Size: 8, Encoding: btf.Signed}
	ptr := &btf.Pointer{Target: &btf.Void{}}
	mainFn := &btf.Func{Name: "fulcrum_ring", Linkage: btf.GlobalFunc,
		Type: &btf.FuncProto{Return: long, Params: []btf.FuncParam{{Name: "ctx", Type: ptr}}}}
	chunkFn := &btf.Func{Name: "chunk", Linkage: btf.StaticFunc,
		Type: &btf.FuncProto{Return: long, Params: []btf.FuncParam{{Name: "index", Type: long}, {Name: "table", Type: ptr}}}}
	fnRef := asm.Instruction{OpCode: asm.LoadImmOp(asm.DWord), Dst: asm.R2, Src: asm.PseudoFunc, Constant: -1}.WithReference("chunk")
	insns := asm.Instructions{
		// main
		btf.WithFuncMetadata(asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord), mainFn),
		asm.StoreMem(asm.RFP, -8, asm.R2, asm.DWord),
		asm.LoadMem(asm.R1, asm.R1, 8, asm.Word),
		fnRef,
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -8),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnLoop.Call(),
		asm.Return(),

		// chunk(r1 = index, r2 = &table)
		btf.WithFuncMetadata(asm.Mov.Reg(asm.R6, asm.R1).WithSymbol("chunk"), chunkFn),
		asm.LoadMem(asm.R3, asm.R2, 0, asm.DWord),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.LSh.Imm(asm.R1, chunkShift+2), // × chunkSlots*4
		asm.Add.Reg(asm.R3, asm.R1),
		asm.Mov.Reg(asm.R1, asm.RFP),
		asm.Add.Imm(asm.R1, buf),
		asm.Mov.Imm(asm.R2, chunkSlots*4),
		asm.FnCopyFromUser.Call(),
		asm.JEq.Imm(asm.R0, 0, "copied"),
		asm.Mov.Imm(asm.R0, 1), // stop the loop; the caller sees too few
		asm.Return(),
		asm.Mov.Reg(asm.R9, asm.R6).WithSymbol("copied"),
		asm.LSh.Imm(asm.R9, chunkShift), // × chunkSlots: the chunk's first slot
	}
	// The slots are written by chunkSlots copies of one body rather than a
	// loop: the verifier walks each copy once, where a loop would cost it
	// every iteration and a comparison of states at each.
	for j := range chunkSlots {
		next := fmt.Sprintf("slot%d", j+1)
		body := asm.Instructions{
			asm.Mov.Reg(asm.R1, asm.R9),
			asm.Add.Imm(asm.R1, int32(j)),
			asm.StoreMem(asm.RFP, key, asm.R1, asm.Word),
			asm.LoadMapPtr(asm.R1, ring.FD()),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, key),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, next),
			asm.LoadMem(asm.R1, asm.RFP, int16(buf+4*j), asm.Word),
			asm.StoreMem(asm.R0, 0, asm.R1, asm.Word),
		}
		if j > 0 {
			body[0] = body[0].WithSymbol(fmt.Sprintf("slot%d", j))
		}
		insns = append(insns, body...)
	}
	return append(insns,
		asm.Mov.Imm(asm.R0, 0).WithSymbol(fmt.Sprintf("slot%d", chunkSlots)),
		asm.Return(),
	)
}

// writerRefused holds the error with which the kernel refused the ring
// writer, once it did: later rings take the batched update without trying
// again.
var writerRefused atomic.Pointer[error]

// ringWriter is a new, empty ring and, for a large one, the program loaded
// to write it.
type ringWriter struct {
	ring *ebpf.Map
	prog *ebpf.Program // nil: a batched update writes the ring
}

// newRingWriter creates a ring of size slots and, if it is large enough,
// loads its writer (a refusal of the kernel leaves it to the batched
// update, as it does every later ring).
func (d *Datapath) newRingWriter(size uint32) (*ringWriter, error) {
	spec := d.ringSpec()
	spec.MaxEntries = size
	ring, err := ebpf.NewMap(spec)
	if err != nil {
		return nil, fmt.Errorf("create ring of %d slots: %w", size, err)
	}
	w := &ringWriter{ring: ring}
	if size >= minProgramSlots && writerRefusedErr() == nil {
		w.prog, _ = loadRingWriter(ring)
	}
	return w, nil
}

// write writes table, of the ring's size, into the ring and unloads the
// writer; the ring stays the caller's.
func (w *ringWriter) write(table []uint32) error {
	whole := 0
	if w.prog != nil {
		whole = len(table) / chunkSlots * chunkSlots
		err := runRingWriter(w.prog, table[:whole])
		w.prog.Close()
		w.prog = nil
		if err != nil {
			return err
		}
	}
	if whole == len(table) {
		return nil
	}
	if _, err := w.ring.BatchUpdate(slotKeys()[whole:len(table)], table[whole:], nil); err != nil {
		return fmt.Errorf("fill ring: %w", err)
	}
	return nil
}

// close releases the ring and the writer.
func (w *ringWriter) close() {
	if w.prog != nil {
		w.prog.Close()
	}
	w.ring.Close()
}

func writerRefusedErr() error {
	if p := writerRefused.Load(); p != nil {
		return *p
	}
	return nil
}

// loadRingWriter loads the ring writer for ring.
func loadRingWriter(ring *ebpf.Map) (*ebpf.Program, error) {
	prog, err := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{
		Name:         "fulcrum_ring",
		Type:         ebpf.Syscall,
		Flags:        unix.BPF_F_SLEEPABLE,
		License:      "Dual MIT/GPL",
		Instructions: ringWriterInstructions(ring),
	}, ebpf.ProgramOptions{})
	if err != nil {
		writerRefused.CompareAndSwap(nil, &err)
		return nil, fmt.Errorf("load ring writer: %w", err)
	}
	return prog, nil
}

// runRingWriter runs a ring writer over table, whose length is a multiple
// of chunkSlots.
func runRingWriter(prog *ebpf.Program, table []uint32) error {
	args := fillArgs{Table: uint64(uintptr(unsafe.Pointer(unsafe.SliceData(table)))), Chunks: uint32(len(table) / chunkSlots)}
	ret, err := prog.Run(&ebpf.RunOptions{Context: args})
	runtime.KeepAlive(table)
	if err != nil {
		return fmt.Errorf("fill ring: run writer: %w", err)
	}
	if ret != args.Chunks {
		return fmt.Errorf("fill ring: the writer wrote %d of %d chunks", ret, args.Chunks)
	}
	return nil
}

// A change of one VIP waits for its new ring to be created and its writer
// loaded (about 1 ms of the few an edit takes) before it can write a slot,
// though neither depends on the ring's contents. So the datapath keeps one
// spare, of the size last swapped in, made after the change that used the
// last one: the next edit of a ring that size starts writing at once. One
// ring and one small program, whatever the number of VIPs.

// takeSpare returns the spare ring writer if it has size slots.
func (d *Datapath) takeSpare(size uint32) *ringWriter {
	w := d.cache.spare.Load()
	if w == nil || w.ring.MaxEntries() != size || !d.cache.spare.CompareAndSwap(w, nil) {
		return nil
	}
	return w
}

// keepSpare makes a spare ring writer of size slots, unless one is kept.
// A failure is left for the next change to meet, without a spare.
func (d *Datapath) keepSpare(size uint32) {
	if w := d.cache.spare.Load(); w != nil && w.ring.MaxEntries() == size {
		return
	}
	w, err := d.newRingWriter(size)
	if err != nil {
		return
	}
	if old := d.cache.spare.Swap(w); old != nil {
		old.close()
	}
}

// closeSpare releases the spare ring writer.
func (d *Datapath) closeSpare() {
	if w := d.cache.spare.Swap(nil); w != nil {
		w.close()
	}
}
