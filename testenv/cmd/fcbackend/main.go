// Command fcbackend is the backend server of Fulcrum's test topologies and
// demo: it answers with its own name, so a client can tell which backend
// the load balancer chose.
//
//	fcbackend -name backend1 -addr 203.0.113.10 -addr 2001:db8:ffff::10
//
// On every address it serves HTTP on port 80 (any GET → "NAME\n"), a TCP
// line echo on port 9000 ("NAME LINE\n" per line, for long-lived flows) and
// a UDP echo on port 53 ("NAME PAYLOAD"), and on port 9001 a held
// connection: "NAME\n" at once, then nothing until -hold has passed, then
// the server closes it (a backend whose requests take that long, for the
// scheduler tests). Listening on the VIP itself (held on lo) makes replies
// leave with the VIP as source. With -delay, every IPv4 packet it sends
// leaves that much later (delay.go): a slow backend, SYN-ACK included.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

type addrList []netip.Addr

func (a *addrList) String() string { return fmt.Sprint(*a) }
func (a *addrList) Set(s string) error {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return err
	}
	*a = append(*a, ip)
	return nil
}

func main() {
	name := flag.String("name", "", "name to answer with (required)")
	var addrs addrList
	flag.Var(&addrs, "addr", "address to listen on (repeatable; required)")
	hold := flag.Duration("hold", time.Second, "how long port 9001 holds a connection before closing it")
	delay := flag.Duration("delay", 0, "hold every IPv4 packet the backend sends this long (a TUN device in its route; root, in a test namespace); SIGUSR1 switches it off and on")
	flag.Parse()
	if *name == "" || len(addrs) == 0 {
		fmt.Fprintln(os.Stderr, "fcbackend: -name and at least one -addr are required")
		os.Exit(2)
	}
	if *delay > 0 {
		if err := delayOutput(*delay); err != nil {
			fmt.Fprintf(os.Stderr, "fcbackend: %v\n", err)
			os.Exit(1)
		}
	}
	for _, a := range addrs {
		if err := serve(*name, a, *hold); err != nil {
			fmt.Fprintf(os.Stderr, "fcbackend: %v\n", err)
			os.Exit(1)
		}
	}
	fmt.Printf("fcbackend %s ready on %v\n", *name, addrs)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
}

func serve(name string, a netip.Addr, hold time.Duration) error {
	httpLn, err := net.Listen("tcp", netip.AddrPortFrom(a, 80).String())
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintln(w, name)
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	go srv.Serve(httpLn)

	echoLn, err := net.Listen("tcp", netip.AddrPortFrom(a, 9000).String())
	if err != nil {
		return err
	}
	go acceptEach(echoLn, func(c net.Conn) {
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			if _, err := fmt.Fprintf(c, "%s %s\n", name, strings.TrimSpace(sc.Text())); err != nil {
				return
			}
		}
	})

	holdLn, err := net.Listen("tcp", netip.AddrPortFrom(a, 9001).String())
	if err != nil {
		return err
	}
	go acceptEach(holdLn, func(c net.Conn) {
		if _, err := fmt.Fprintln(c, name); err == nil {
			time.Sleep(hold)
		}
	})

	udp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 53)))
	if err != nil {
		return err
	}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := udp.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			udp.WriteToUDPAddrPort([]byte(name+" "+string(buf[:n])), from)
		}
	}()
	return nil
}

// acceptEach serves every connection ln accepts with serve, each in its own
// goroutine, and closes it when serve returns.
func acceptEach(ln net.Listener, serve func(net.Conn)) {
	for c, err := ln.Accept(); err == nil; c, err = ln.Accept() {
		go func() { defer c.Close(); serve(c) }()
	}
}
