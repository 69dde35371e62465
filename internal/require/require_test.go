package require

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// fakeTB records how a helper ended a test. Like testing.T, Fatal and Skip
// end the calling goroutine, so the helper runs on its own goroutine.
type fakeTB struct {
	testing.TB // the methods the helpers do not call panic on the nil value
	failed     bool
	skipped    bool
	msg        string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatal(args ...any) {
	f.failed, f.msg = true, fmt.Sprint(args...)
	runtime.Goexit()
}
func (f *fakeTB) Skip(args ...any) {
	f.skipped, f.msg = true, fmt.Sprint(args...)
	runtime.Goexit()
}

// run calls helper with a fresh fakeTB and returns it once the helper has
// returned or ended the (fake) test.
func run(helper func(testing.TB)) *fakeTB {
	f := &fakeTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		helper(f)
	}()
	<-done
	return f
}

const noSuchTool = "fulcrum-no-such-tool"

func TestToolStrict(t *testing.T) {
	t.Setenv(StrictEnv, "1")
	f := run(func(tb testing.TB) { Tool(tb, noSuchTool) })
	if !f.failed || f.skipped {
		t.Fatalf("with %s=1: failed=%v skipped=%v, want a failure", StrictEnv, f.failed, f.skipped)
	}
	for _, want := range []string{noSuchTool + " not found", "apt-get install " + noSuchTool, StrictEnv} {
		if !strings.Contains(f.msg, want) {
			t.Errorf("failure %q does not say %q", f.msg, want)
		}
	}
}

func TestToolLenient(t *testing.T) {
	for _, v := range []string{"", "0"} {
		t.Setenv(StrictEnv, v)
		f := run(func(tb testing.TB) { Tool(tb, noSuchTool) })
		if f.failed || !f.skipped {
			t.Fatalf("with %s=%q: failed=%v skipped=%v, want a skip", StrictEnv, v, f.failed, f.skipped)
		}
		if !strings.Contains(f.msg, noSuchTool+" not found") {
			t.Errorf("skip %q does not name %s", f.msg, noSuchTool)
		}
	}
}

// TestToolPackage: a known tool's message names its package, not the tool.
func TestToolPackage(t *testing.T) {
	t.Setenv(StrictEnv, "")
	t.Setenv("PATH", t.TempDir())
	saved := sbin
	sbin = nil
	t.Cleanup(func() { sbin = saved })
	f := run(func(tb testing.TB) { Tool(tb, "nft") })
	if !f.skipped || !strings.Contains(f.msg, "apt-get install nftables") {
		t.Fatalf("skipped=%v msg %q, want a skip naming nftables", f.skipped, f.msg)
	}
}

func TestToolFound(t *testing.T) {
	t.Setenv(StrictEnv, "1")
	var path string
	f := run(func(tb testing.TB) { path = Tool(tb, "go") })
	if f.failed || f.skipped || !strings.HasSuffix(path, "/go") {
		t.Fatalf("Tool(go) = %q, failed=%v skipped=%v msg %q; want the go binary that runs this test", path, f.failed, f.skipped, f.msg)
	}
}

func TestPoll(t *testing.T) {
	n := 0
	took, err := Poll(time.Second, func() error {
		if n++; n < 3 {
			return fmt.Errorf("n=%d", n)
		}
		return nil
	})
	if err != nil || n != 3 {
		t.Fatalf("Poll: n=%d err=%v, want n=3 and no error", n, err)
	}
	if took > 500*time.Millisecond {
		t.Errorf("Poll took %s for 3 looks, want a few milliseconds", took)
	}

	last := errors.New("last seen: 7")
	took, err = Poll(50*time.Millisecond, func() error { return last })
	if !errors.Is(err, last) || !strings.Contains(err.Error(), "not within 50ms") {
		t.Fatalf("Poll on timeout: %v, want %q wrapped with the timeout", err, last)
	}
	if took < 50*time.Millisecond {
		t.Errorf("Poll gave up after %s, before its 50ms timeout", took)
	}
}

func TestEventuallyFails(t *testing.T) {
	f := run(func(tb testing.TB) {
		Eventually(tb, 20*time.Millisecond, func() error { return errors.New("state backup") })
	})
	if !f.failed || !strings.Contains(f.msg, "state backup") {
		t.Fatalf("failed=%v msg %q, want a failure with the last state", f.failed, f.msg)
	}
}
