package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The delay path (-delay): the kernel has no netem here, so the backend's
// own IPv4 packets are routed into a TUN device, held for the delay in
// this process, and written back, to be forwarded out of the namespace as
// if they had just been sent. Everything the backend sends is late by the
// delay: a SYN-ACK (what the LB's passive response time sees), a health
// probe's answer (the active one), every reply. Only the backend's own
// packets: the rule matches locally generated ones (iif lo), and packets
// between its own addresses stay on the local table, which comes first.
const (
	delayDev   = "fcdelay0"
	delayTable = "7100"
	delayPref  = "7100"
)

// delayOutput sets up the delay path in the calling process's network
// namespace (a test backend's, never a host's) and runs it until exit.
// SIGUSR1 switches the delay off and on again (a backend that recovers,
// and slows down again): off, the rule goes, so the backend's packets no
// longer pass the TUN device and this process at all (a recovered backend
// is as fast as one never delayed); packets held already leave when due.
func delayOutput(delay time.Duration) error {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("delay: open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(delayDev)
	if err != nil {
		return err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return fmt.Errorf("delay: create %s: %w", delayDev, err)
	}
	// Forwarded back in, a packet has one of our addresses as source:
	// accept_local lets it in, rp_filter would drop it (the route back
	// to our own address is local).
	for path, v := range map[string]string{
		"/proc/sys/net/ipv4/ip_forward":                           "1",
		"/proc/sys/net/ipv4/conf/all/rp_filter":                   "0",
		"/proc/sys/net/ipv4/conf/" + delayDev + "/rp_filter":      "0",
		"/proc/sys/net/ipv4/conf/" + delayDev + "/accept_local":   "1",
		"/proc/sys/net/ipv4/conf/" + delayDev + "/send_redirects": "0",
		"/proc/sys/net/ipv4/conf/all/send_redirects":              "0",
	} {
		if err := os.WriteFile(path, []byte(v), 0o644); err != nil {
			return fmt.Errorf("delay: %w", err)
		}
	}
	rule := []string{"rule", "add", "iif", "lo", "lookup", delayTable, "pref", delayPref}
	// A restarted backend finds its predecessor's rule (the route went
	// with the device): delete it first, so there is one.
	_ = exec.Command("ip", "rule", "del", "pref", delayPref).Run()
	for _, args := range [][]string{
		{"link", "set", delayDev, "up"},
		{"route", "add", "default", "dev", delayDev, "table", delayTable},
		rule,
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("delay: ip %v: %v: %s", args, err, out)
		}
	}
	type held struct {
		at  time.Time
		pkt []byte
	}
	toggle := make(chan os.Signal, 1)
	signal.Notify(toggle, syscall.SIGUSR1)
	go func() {
		on := true
		for range toggle {
			args, state := rule, "on"
			if on {
				args, state = []string{"rule", "del", "pref", delayPref}, "off"
			}
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "fcbackend: delay %s: ip %v: %v: %s\n", state, args, err, out)
				continue
			}
			on = !on
			fmt.Printf("fcbackend: delay %s\n", state)
		}
	}()
	q := make(chan held, 8192)
	go func() {
		for {
			buf := make([]byte, 65536)
			n, err := unix.Read(fd, buf)
			if err != nil {
				fmt.Fprintf(os.Stderr, "fcbackend: delay: read: %v\n", err)
				os.Exit(1)
			}
			q <- held{time.Now().Add(delay), buf[:n]}
		}
	}()
	go func() {
		// One delay for all: first in, first out, in order.
		for h := range q {
			time.Sleep(time.Until(h.at))
			if _, err := unix.Write(fd, h.pkt); err != nil {
				fmt.Fprintf(os.Stderr, "fcbackend: delay: write: %v\n", err)
			}
		}
	}()
	return nil
}
