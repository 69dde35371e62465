//go:build vrrpload

package daemon_test

import (
	"fmt"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fulcrum-lb/fulcrum/testenv"
)

// Helpers of TestFailoverUnderLoad (failover_load_test.go), built only
// with the vrrpload tag, as that test is.

// drops is what the kernel could not queue to the capture socket: if not
// 0, the capture is incomplete and a gap in it proves nothing.
func (c *advertCapture) drops() uint32 {
	st, err := unix.GetsockoptTpacketStats(c.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		return ^uint32(0)
	}
	return st.Drops
}

// gapStats describes the spacing of a series of times.
type gapStats struct {
	n         int
	worst     time.Duration
	worstAt   time.Time // the end of the worst gap
	over      int       // gaps longer than the limit given to gaps
	overTimes []time.Time
}

// gaps measures the spacing of times; over counts the gaps longer than
// limit.
func gaps(times []time.Time, limit time.Duration) gapStats {
	g := gapStats{n: len(times)}
	for i := 1; i < len(times); i++ {
		d := times[i].Sub(times[i-1])
		if d > g.worst {
			g.worst, g.worstAt = d, times[i]
		}
		if d > limit {
			g.over++
			if len(g.overTimes) < 20 {
				g.overTimes = append(g.overTimes, times[i])
			}
		}
	}
	return g
}

func (g gapStats) String() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d adverts, worst gap %s", g.n, g.worst.Round(100*time.Microsecond))
	if !g.worstAt.IsZero() {
		fmt.Fprintf(&sb, " (ending %s)", g.worstAt.Format("15:04:05.000"))
	}
	fmt.Fprintf(&sb, ", %d gaps over the limit", g.over)
	return sb.String()
}

// netCounters returns `ip -s -s link show dev iface` in host, for the
// drop counters (and ethtool -S where the driver has them: veth's
// per-queue xdp and peer drops).
func netCounters(host *testenv.Host, iface string) string {
	var sb strings.Builder
	if out, err := host.Run(bg(), "ip", "-s", "-s", "link", "show", "dev", iface); err == nil {
		sb.WriteString(out)
	}
	if out, err := host.Run(bg(), "ethtool", "-S", iface); err == nil {
		for _, l := range strings.Split(out, "\n") {
			// Only the nonzero drop/error/xdp counters: the rest is noise.
			f := strings.Fields(l)
			if len(f) == 2 && f[1] != "0" && (strings.Contains(f[0], "drop") || strings.Contains(f[0], "err") || strings.Contains(f[0], "xdp")) {
				sb.WriteString("  ethtool " + strings.Join(f, " ") + "\n")
			}
		}
	}
	return sb.String()
}
