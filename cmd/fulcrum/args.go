package main

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/fulcrum-lb/fulcrum/internal/config"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// reorderArgs lets flags follow positional arguments, as in
// "fulcrum vip add tcp/203.0.113.10:80 --mode dsr", and global flags
// follow the command, as in "fulcrum vip list -o json". urfave/cli/v2
// stops parsing flags at the first positional argument, so the flags of
// the command that runs are moved before its arguments, and global flags
// before the command. "--" ends flags; what follows stays positional.
func reorderArgs(app *cli.App, args []string) []string {
	if len(args) < 2 || args[len(args)-1] == "--generate-bash-completion" {
		return args // shell completion sees the line as typed
	}
	var (
		globals = []string{args[0]}
		path    []string // command names, with their own flags in place
		flags   []string // the final command's flags
		pos     []string // positional arguments
		cmds    = app.Commands
		leaf    *cli.Command
		inLeaf  bool
	)
	for i := 1; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if isFlag(a) {
			var own []cli.Flag
			if leaf != nil {
				own = leaf.Flags
			}
			n := 1
			dst := &globals
			switch {
			case leaf != nil && hasFlag(own, a):
				n = flagArity(own, a)
				dst = &path
				if inLeaf {
					dst = &flags
				}
			case hasFlag(app.Flags, a):
				n = flagArity(app.Flags, a)
			case leaf != nil:
				// Unknown (or -h): left for the command to report.
				dst = &path
				if inLeaf {
					dst = &flags
				}
			}
			if i+n > len(args) {
				// A flag that wants a value ends the line: urfave/cli
				// must see it last, with nothing after it to take as its
				// value, so that it reports the missing value.
				*dst = append(*dst, args[i])
				switch dst {
				case &globals:
					return globals
				case &path:
					return append(globals, path...)
				}
				return append(append(globals, path...), flags...)
			}
			*dst = append(*dst, args[i:i+n]...)
			i += n - 1
			continue
		}
		if !inLeaf {
			if cmd := findCommand(cmds, a); cmd != nil {
				path = append(path, a)
				leaf, cmds = cmd, cmd.Subcommands
				if len(cmds) == 0 {
					inLeaf = true
					if cmd.SkipFlagParsing {
						pos = append(pos, args[i+1:]...)
						break
					}
				}
				continue
			}
			inLeaf = true // an argument of a group: reported by groupAction
		}
		pos = append(pos, a)
	}
	out := append(globals, path...)
	out = append(out, flags...)
	if slices.ContainsFunc(pos, func(p string) bool { return strings.HasPrefix(p, "-") }) {
		out = append(out, "--")
	}
	return append(out, pos...)
}

// isFlag reports whether a looks like a flag rather than a value; a
// negative number is a value.
func isFlag(a string) bool {
	if len(a) < 2 || a[0] != '-' {
		return false
	}
	_, err := strconv.ParseFloat(a, 64)
	return err != nil
}

func flagName(a string) string {
	name := strings.TrimLeft(a, "-")
	name, _, _ = strings.Cut(name, "=")
	return name
}

func hasFlag(flags []cli.Flag, a string) bool {
	return lookupFlag(flags, a) != nil
}

func lookupFlag(flags []cli.Flag, a string) cli.Flag {
	name := flagName(a)
	for _, f := range flags {
		if slices.Contains(f.Names(), name) {
			return f
		}
	}
	return nil
}

// flagArity is how many arguments the flag a takes up: 2 for "--mode dsr",
// 1 for "--mode=dsr" or a boolean flag.
func flagArity(flags []cli.Flag, a string) int {
	if strings.Contains(a, "=") {
		return 1
	}
	if f, ok := lookupFlag(flags, a).(interface{ TakesValue() bool }); ok && f.TakesValue() {
		return 2
	}
	return 1
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

// arg describes one positional argument for error messages.
type arg struct {
	name string // e.g. "VIP"
	form string // e.g. "PROTO/ADDRESS:PORT, e.g. tcp/203.0.113.10:80"
}

var (
	vipArg     = arg{"VIP", "PROTO/ADDRESS:PORT, e.g. tcp/203.0.113.10:80 or udp/[2001:db8::1]:53"}
	backendArg = arg{"ADDRESS", "the backend's IP address, e.g. 198.18.0.12"}
)

// positional checks that c got between len(required) and
// len(required)+len(optional) arguments and returns them.
func positional(c *cli.Context, required []arg, optional ...arg) ([]string, error) {
	got := c.Args().Slice()
	if len(got) < len(required) {
		missing := required[len(got)]
		return nil, usagef("%s: missing %s: want %s", commandPath(c), missing.name, missing.form)
	}
	if len(got) > len(required)+len(optional) {
		extra := got[len(required)+len(optional)]
		return nil, usagef("%s: unexpected argument %q (usage: %s)", commandPath(c), extra, strings.TrimSpace(c.Command.HelpName+" "+c.Command.ArgsUsage))
	}
	return got, nil
}

// vipArgs checks that the command got one argument, a VIP, and parses it.
func vipArgs(c *cli.Context) (api.VIPRef, error) {
	args, err := positional(c, []arg{vipArg})
	if err != nil {
		return api.VIPRef{}, err
	}
	return parseVIP(c, args[0])
}

// parseVIP parses a VIP argument.
func parseVIP(c *cli.Context, s string) (api.VIPRef, error) {
	ref, err := api.ParseVIPRef(s)
	if err != nil {
		return api.VIPRef{}, usagef("%s: %v", commandPath(c), err)
	}
	return ref, nil
}

// parseAddr parses an IP address argument; IPv6 may be in brackets.
func parseAddr(s string) (netip.Addr, error) {
	addr, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"))
	if err != nil || addr.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	}
	return addr, nil
}

// parseBackendAddr parses a backend ADDRESS argument.
func parseBackendAddr(c *cli.Context, s string) (netip.Addr, error) {
	addr, err := parseAddr(s)
	if err != nil {
		return netip.Addr{}, usagef("%s: backend %v: want %s", commandPath(c), err, backendArg.form)
	}
	return addr, nil
}

// backendArgs checks and parses the arguments `VIP ADDRESS` of the
// backend commands, followed by the required extra ones, which it returns
// unparsed.
func backendArgs(c *cli.Context, extra ...arg) (api.VIPRef, netip.Addr, []string, error) {
	args, err := positional(c, append([]arg{vipArg, backendArg}, extra...))
	if err != nil {
		return api.VIPRef{}, netip.Addr{}, nil, err
	}
	ref, err := parseVIP(c, args[0])
	if err != nil {
		return api.VIPRef{}, netip.Addr{}, nil, err
	}
	addr, err := parseBackendAddr(c, args[1])
	if err != nil {
		return api.VIPRef{}, netip.Addr{}, nil, err
	}
	return ref, addr, args[2:], nil
}

// parseWeight parses a weight, 0 (drain) to config.MaxWeight.
func parseWeight(s string) (uint32, error) {
	w, err := strconv.ParseUint(s, 10, 32)
	if err != nil || w > config.MaxWeight {
		return 0, fmt.Errorf("weight %q: want a whole number from 0 to %d (0 drains)", s, config.MaxWeight)
	}
	return uint32(w), nil
}

// parseMAC parses a MAC address and returns it in canonical form.
func parseMAC(s string) (string, error) {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return "", fmt.Errorf("mac %q: want six hex bytes, e.g. 02:00:5e:00:53:01", s)
	}
	return hw.String(), nil
}

// parseBackendSpec parses a --backend value: ADDRESS[,weight=N][,mac=MAC].
// The weight defaults to 1, as in the config file.
func parseBackendSpec(s string) (api.Backend, error) {
	fields := strings.Split(s, ",")
	addr, err := parseAddr(fields[0])
	if err != nil {
		return api.Backend{}, fmt.Errorf("--backend %q: %v: want ADDRESS[,weight=N][,mac=MAC]", s, err)
	}
	b := api.Backend{Address: addr, Weight: 1}
	seen := map[string]bool{}
	for _, f := range fields[1:] {
		key, val, ok := strings.Cut(f, "=")
		if !ok || seen[key] {
			return api.Backend{}, fmt.Errorf("--backend %q: %q: want ADDRESS[,weight=N][,mac=MAC]", s, f)
		}
		seen[key] = true
		switch key {
		case "weight":
			if b.Weight, err = parseWeight(val); err != nil {
				return api.Backend{}, fmt.Errorf("--backend %q: %v", s, err)
			}
		case "mac":
			if b.MAC, err = parseMAC(val); err != nil {
				return api.Backend{}, fmt.Errorf("--backend %q: %v", s, err)
			}
		default:
			return api.Backend{}, fmt.Errorf("--backend %q: unknown option %q: want weight=N or mac=MAC", s, key)
		}
	}
	return b, nil
}

// oneOf checks a flag's value against its allowed values; "" passes (the
// daemon's default applies).
func oneOf(c *cli.Context, flag string, allowed []string) (string, error) {
	v := strings.ToLower(c.String(flag))
	if v == "" || slices.Contains(allowed, v) {
		return v, nil
	}
	want := strings.Join(allowed, " or ")
	if len(allowed) > 2 {
		want = "one of " + strings.Join(allowed, ", ")
	}
	return "", usagef("%s: --%s %q: want %s", commandPath(c), flag, c.String(flag), want)
}
