package reconcile

import (
	"log/slog"
	"os"
	"strings"
)

// EnableForwarding turns on IPv4 and IPv6 forwarding for the interface
// ifname through /proc/sys/net, writing only a value that is not 1
// already, and logs each sysctl it changes.
func EnableForwarding(log *slog.Logger, ifname string) error {
	for _, key := range []string{"ipv4/conf/" + ifname + "/forwarding", "ipv6/conf/" + ifname + "/forwarding"} {
		path := "/proc/sys/net/" + key
		if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == "1" {
			continue
		}
		if err := os.WriteFile(path, []byte("1"), 0o644); err != nil {
			return err
		}
		log.Info("enabled forwarding for ipip next-hop lookups", "sysctl", strings.ReplaceAll(key, "/", "."))
	}
	return nil
}
