// Command fulcrum is the Fulcrum load balancer: the daemon that owns the
// XDP fast path, and the CLI that controls it through the daemon's API.
//
// One file per noun: vip.go, backend.go, status.go, stats.go, explain.go,
// apply.go, check.go, vrrp.go, daemon.go (daemon, detach, vrrp-agent), decap.go,
// version.go, completion.go. Every command that talks to the daemon has
// the shape written once in call.go; args.go parses command lines and
// output.go formats answers. docs/cli.md describes the commands.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

func main() {
	os.Exit(run(context.Background(), os.Args, os.Stdout, os.Stderr))
}

// Exit statuses. report maps every error to one of them:
//
//   - exitUsage: a usageError: an argument or flag the command cannot
//     use, or one urfave/cli could not parse (onUsageError);
//   - exitError: everything else that fails, and so every answer of the
//     daemon that is not a success (api.ErrInvalid, api.ErrNotFound,
//     api.ErrConflict or any other), a daemon that cannot be reached or
//     does not answer within --timeout, and local failures (a file that
//     cannot be read, BPF); commands that run without a daemon (daemon,
//     detach, decap, vrrp-agent) pick theirs with cli.Exit;
//   - exitTimeout: `backend drain --wait` drained the backend, but its
//     active connections did not end within --timeout.
const (
	exitOK      = 0
	exitError   = 1 // the command failed, e.g. the daemon refused it
	exitUsage   = 2 // bad command line
	exitTimeout = 3 // a wait ended before what it waited for
)

// run runs the CLI on args (args[0] is the program name), writing output
// to stdout and errors to stderr, and returns the exit status. It never
// panics and never exits the process.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runAt(ctx, args, stdout, stderr, time.Now)
}

// runAt is run with the clock that "3h0m ago" is measured against, so that
// tests can fix it.
func runAt(ctx context.Context, args []string, stdout, stderr io.Writer, now func() time.Time) (code int) {
	defer func() {
		if v := recover(); v != nil {
			fmt.Fprintf(stderr, "fulcrum: internal error: %v\n", v)
			if os.Getenv("FULCRUM_DEBUG") != "" {
				stderr.Write(debug.Stack())
			}
			code = exitError
		}
	}()
	if len(args) == 0 {
		args = []string{"fulcrum"}
	}
	app := newApp(stdout, stderr, now)
	setCompleter(app, args)
	err := app.RunContext(ctx, reorderArgs(app, args))
	return report(stderr, err)
}

// report prints err, if any, as one line and returns the exit status.
func report(stderr io.Writer, err error) int {
	if err == nil {
		return exitOK
	}
	var usage *usageError
	if errors.As(err, &usage) {
		fmt.Fprintf(stderr, "fulcrum: %s\n", usage.msg)
		return exitUsage
	}
	var exit cli.ExitCoder
	if errors.As(err, &exit) {
		// cli.Exit messages carry their own context ("fulcrum daemon: ...").
		if msg := strings.TrimSpace(exit.Error()); msg != "" {
			fmt.Fprintln(stderr, msg)
		}
		return exit.ExitCode()
	}
	fmt.Fprintf(stderr, "fulcrum: %s\n", strings.TrimSpace(err.Error()))
	return exitError
}

// usageError is a bad command line: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// usagef returns a usageError. Messages name the argument and the form
// that is expected, in one line.
func usagef(format string, a ...any) error {
	return &usageError{msg: fmt.Sprintf(format, a...)}
}

func newApp(stdout, stderr io.Writer, now func() time.Time) *cli.App {
	commands := daemonCommands()
	commands = append(commands,
		applyCommand(),
		checkCommand(),
		configCommand(),
		vipCommand(),
		backendCommand(),
		connCommand(),
		statusCommand(now),
		statsCommand(),
		explainCommand(),
		decapCommand(),
		vrrpCommand(now),
		bgpCommand(now),
		nodeCommand(),
		versionCommand(),
		completionCommand(),
		manCommand(),
	)
	app := &cli.App{
		Name:  "fulcrum",
		Usage: "XDP layer-4 load balancer: the daemon and its control CLI",
		Description: "Commands other than daemon, detach, check, decap, version and completion talk to a running daemon\n" +
			"through its root-only API socket. See docs/cli.md.",
		HideVersion:               true,
		EnableBashCompletion:      true,
		DisableSliceFlagSeparator: true, // --backend 198.18.0.12,weight=2 is one value
		Writer:                    stdout,
		ErrWriter:                 stderr,
		Flags: []cli.Flag{
			&cli.StringFlag{
				Name:    "socket",
				Value:   api.DefaultSocket,
				EnvVars: []string{"FULCRUM_SOCKET"},
				Usage:   "the daemon's API `SOCKET`",
			},
			&cli.StringFlag{
				Name:    "output",
				Aliases: []string{"o"},
				Value:   "table",
				Usage:   "output `FORMAT`: table (for people) or json (for scripts)",
			},
			&cli.DurationFlag{
				Name:  "timeout",
				Value: 30 * time.Second,
				Usage: "give up on the daemon after `DURATION`",
			},
		},
		Before: func(c *cli.Context) error {
			switch o := c.String("output"); o {
			case "table", "json":
				return nil
			default:
				return usagef("--output %q: want table or json", o)
			}
		},
		Commands: commands,
		// urfave/cli would print errors itself and call os.Exit; run does
		// both through report instead.
		ExitErrHandler: func(*cli.Context, error) {},
	}
	app.OnUsageError = onUsageError
	app.Action = groupAction
	for _, c := range app.Commands {
		setDefaults(c)
	}
	return app
}

// setDefaults makes every command report usage errors as one line, and
// every group answer an unknown subcommand with a usage error.
func setDefaults(c *cli.Command) {
	if c.OnUsageError == nil {
		c.OnUsageError = onUsageError
	}
	if len(c.Subcommands) > 0 && c.Action == nil {
		c.Action = groupAction
	}
	if len(c.Subcommands) > 0 {
		// urfave/cli renders `fulcrum help GROUP` before it has sorted the
		// group's subcommands into categories, and its template stops
		// at COMMANDS; there are no categories here, so list them plainly.
		c.CustomHelpTemplate = groupHelpTemplate
	}
	for _, sub := range c.Subcommands {
		setDefaults(sub)
	}
}

var groupHelpTemplate = strings.Replace(cli.SubcommandHelpTemplate,
	`{{template "visibleCommandCategoryTemplate" .}}`, `{{template "visibleCommandTemplate" .}}`, 1)

// onUsageError turns a flag parsing error into a one-line usage error.
func onUsageError(c *cli.Context, err error, _ bool) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: "); ok {
		msg = fmt.Sprintf("unknown flag %s", dashes(name))
	} else if name, ok := strings.CutPrefix(msg, "flag needs an argument: "); ok {
		msg = fmt.Sprintf("flag %s needs a value", dashes(name))
	} else if strings.HasPrefix(msg, "invalid value ") {
		// `invalid value "x" for flag -weight: parse error`
		msg = strings.TrimSuffix(msg, ": parse error")
		msg = strings.Replace(msg, "for flag -", "for flag --", 1)
		if f := flagNamed(c, msg); f != "" {
			msg += ": want " + f
		}
	}
	return usagef("%s%s (see '%s --help')", where(c), msg, c.Command.HelpName)
}

// dashes renders a flag name as typed: -o, --mode.
func dashes(name string) string {
	name = strings.TrimLeft(name, "-")
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// flagNamed describes the value of the flag an "invalid value" message
// is about.
func flagNamed(c *cli.Context, msg string) string {
	_, rest, ok := strings.Cut(msg, "for flag --")
	if !ok {
		return ""
	}
	for _, f := range c.Command.Flags {
		for _, n := range f.Names() {
			if n != rest {
				continue
			}
			switch f.(type) {
			case *cli.UintFlag, *cli.Uint64Flag, *cli.IntFlag:
				return "a whole number"
			case *cli.DurationFlag:
				return "a duration such as 500ms or 30s"
			case *cli.BoolFlag:
				return "true or false"
			}
		}
	}
	return ""
}

// commandPath is the command's name without the program's, e.g. "vip add",
// or "fulcrum" at the top level.
func commandPath(c *cli.Context) string {
	if c.Command == nil || c.Command.HelpName == "" {
		return "fulcrum"
	}
	if p, ok := strings.CutPrefix(c.Command.HelpName, "fulcrum "); ok {
		return p
	}
	return c.Command.HelpName
}

// where prefixes a usage message with the command it is about, if any:
// "vip add: ...".
func where(c *cli.Context) string {
	if p := commandPath(c); p != "fulcrum" {
		return p + ": "
	}
	return ""
}

// groupAction runs a command group (or the program) given no subcommand
// it knows: help for no argument, a usage error for an unknown one.
func groupAction(c *cli.Context) error {
	if !c.Args().Present() {
		if c.Command == nil || c.Command.Name == "" || c.Command.Name == c.App.Name {
			return cli.ShowAppHelp(c)
		}
		return cli.ShowSubcommandHelp(c)
	}
	var names []string
	subs := c.App.Commands
	if c.Command != nil && len(c.Command.Subcommands) > 0 {
		subs = c.Command.Subcommands
	}
	for _, s := range subs {
		if !s.Hidden && s.Name != "help" {
			names = append(names, s.Name)
		}
	}
	return usagef("%sunknown command %q, want one of: %s", where(c), c.Args().First(), strings.Join(names, ", "))
}

// jsonOutput reports whether -o json was asked for.
func jsonOutput(c *cli.Context) bool {
	return c.String("output") == "json"
}
