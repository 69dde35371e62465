package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sysctlPath turns "net.ipv4.ip_forward" into /proc/sys/net/ipv4/ip_forward.
// A key that already contains '/' is taken as a path under /proc/sys (use
// that form for interface names with dots, e.g. "net/ipv4/conf/eth0.10/rp_filter").
func sysctlPath(key string) string {
	if !strings.Contains(key, "/") {
		key = strings.ReplaceAll(key, ".", "/")
	}
	return filepath.Join("/proc/sys", filepath.Clean("/"+key))
}

// Sysctl sets a sysctl inside the host's namespace. Keys under net. are
// per-namespace; others are global and must not be set through this.
func (h *Host) Sysctl(key, value string) error {
	return h.Do(func() error { return writeSysctl(h, key, value) })
}

// Sysctls sets several sysctls inside the host's namespace, in key order.
func (h *Host) Sysctls(kv map[string]string) error {
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return h.Do(func() error {
		for _, k := range keys {
			if err := writeSysctl(h, k, kv[k]); err != nil {
				return err
			}
		}
		return nil
	})
}

func writeSysctl(h *Host, key, value string) error {
	p := sysctlPath(key)
	if !strings.HasPrefix(p, "/proc/sys/net/") {
		return fmt.Errorf("testenv: %s: sysctl %s is not per-namespace", h.Name, key)
	}
	if err := os.WriteFile(p, []byte(value), 0); err != nil {
		return fmt.Errorf("testenv: %s: sysctl %s=%s: %w", h.Name, key, value, err)
	}
	return nil
}

// ReadSysctl reads a sysctl inside the host's namespace.
func (h *Host) ReadSysctl(key string) (string, error) {
	var v string
	err := h.Do(func() error {
		b, err := os.ReadFile(sysctlPath(key))
		if err != nil {
			return fmt.Errorf("testenv: %s: sysctl %s: %w", h.Name, key, err)
		}
		v = strings.TrimSpace(string(b))
		return nil
	})
	return v, err
}

// ethtoolValue is struct ethtool_value from <linux/ethtool.h>.
type ethtoolValue struct {
	cmd  uint32
	data uint32
}

// ifreqData is struct ifreq with ifr_data set.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

// ethtool runs one ETHTOOL_[GS]* value command on iface from inside the
// host's namespace (the ioctl resolves the name in the socket's namespace).
func (h *Host) ethtool(iface string, cmd, data uint32) (uint32, error) {
	if len(iface) >= unix.IFNAMSIZ {
		return 0, fmt.Errorf("testenv: bad interface name %q", iface)
	}
	var out uint32
	err := h.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		v := &ethtoolValue{cmd: cmd, data: data}
		var ifr ifreqData
		copy(ifr.name[:], iface)
		ifr.data = unsafe.Pointer(v)
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
		runtime.KeepAlive(v)
		if errno != 0 {
			return errno
		}
		out = v.data
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("testenv: %s: ethtool %#x on %s: %w", h.Name, cmd, iface, err)
	}
	return out, nil
}

// SetTxChecksum turns TX checksum offload of iface on or off, like
// `ethtool -K IFACE tx on|off` (the kernel then also drops TSO, which needs
// it). Off matters for traffic that an XDP program forwards: with offload a
// veth hands over packets whose checksum only the skb path would complete.
func (h *Host) SetTxChecksum(iface string, on bool) error {
	var v uint32
	if on {
		v = 1
	}
	_, err := h.ethtool(iface, unix.ETHTOOL_STXCSUM, v)
	return err
}

// TxChecksum reports whether TX checksum offload is on for iface.
func (h *Host) TxChecksum(iface string) (bool, error) {
	v, err := h.ethtool(iface, unix.ETHTOOL_GTXCSUM, 0)
	return v != 0, err
}
