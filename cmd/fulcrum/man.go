package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cpuguy83/go-md2man/v2/md2man"
	"github.com/urfave/cli/v2"

	"github.com/fulcrum-lb/fulcrum/internal/version"
)

// manCommand writes the manual pages, generated from the command
// definitions themselves so that they cannot drift from --help: fulcrum(8)
// and one page per command, fulcrum-vip-add(8) for `fulcrum vip add`.
// `make man` and `make package` run it; it is hidden because it is a
// build step, not something an operator runs.
func manCommand() *cli.Command {
	return &cli.Command{
		Name:      "man-pages",
		Hidden:    true,
		Usage:     "write the manual pages into DIR/man8",
		ArgsUsage: "DIR",
		Action: func(c *cli.Context) error {
			args, err := positional(c, []arg{{"DIR", "the directory to write man8/*.8 into"}})
			if err != nil {
				return err
			}
			return writeManPages(c.App, filepath.Join(args[0], "man8"))
		},
	}
}

// manSection is the section of every page: system administration.
const manSection = 8

// writeManPages renders every page of app into dir.
func writeManPages(app *cli.App, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, p := range manPages(app) {
		path := filepath.Join(dir, p.name+"."+fmt.Sprint(manSection))
		if err := os.WriteFile(path, md2man.Render([]byte(p.markdown)), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// manPage is one page: its name (fulcrum-vip-add) and its text in the
// markdown that go-md2man renders to roff.
type manPage struct {
	name     string
	path     []string // command words after fulcrum: ["vip", "add"]
	cmd      *cli.Command
	markdown string
}

// manPages returns fulcrum(8) and a page for every visible command, in
// the order of the command tree.
func manPages(app *cli.App) []manPage {
	pages := []manPage{{name: app.Name, markdown: appPage(app)}}
	var walk func(parent []string, cmds []*cli.Command)
	walk = func(parent []string, cmds []*cli.Command) {
		for _, c := range visibleCommands(cmds) {
			path := append(append([]string{}, parent...), c.Name)
			pages = append(pages, manPage{name: pageName(app, path), path: path, cmd: c, markdown: commandPage(app, path, c)})
			walk(path, c.Subcommands)
		}
	}
	walk(nil, app.Commands)
	return pages
}

// visibleCommands leaves out hidden commands and urfave/cli's help.
func visibleCommands(cmds []*cli.Command) []*cli.Command {
	var out []*cli.Command
	for _, c := range cmds {
		if !c.Hidden && c.Name != "help" {
			out = append(out, c)
		}
	}
	return out
}

func pageName(app *cli.App, path []string) string {
	return strings.Join(append([]string{app.Name}, path...), "-")
}

func titleLine(name string) string {
	return fmt.Sprintf("%% %s %d \"\" \"fulcrum %s\" \"Fulcrum Manual\"\n\n",
		strings.ToUpper(name), manSection, version.Version)
}

func appPage(app *cli.App) string {
	var b strings.Builder
	b.WriteString(titleLine(app.Name))
	fmt.Fprintf(&b, "# NAME\n\n%s - %s\n\n", app.Name, manEscape(app.Usage))
	fmt.Fprintf(&b, "# SYNOPSIS\n\n**%s** [*global options*] *command* [*command options*] [*arguments*]\n\n", app.Name)
	fmt.Fprintf(&b, "# DESCRIPTION\n\n%s\n\n", manText(app.Description))
	b.WriteString("# GLOBAL OPTIONS\n\n")
	writeFlags(&b, app.VisibleFlags())
	b.WriteString("# COMMANDS\n\n")
	writeCommands(&b, app, nil, app.Commands)
	b.WriteString("# EXIT STATUS\n\n0 on success; 1 when the command failed (the daemon refused it, could not be reached, " +
		"or a local step failed); 2 for a bad command line.\n\n")
	b.WriteString("# FILES\n\n*/etc/fulcrum/fulcrum.yaml*\n: the configuration the systemd unit gives the daemon\n\n" +
		"*/run/fulcrum/INSTANCE.sock*\n: the daemon's API socket (root only)\n\n" +
		"*/sys/fs/bpf/fulcrum/INSTANCE*\n: the pinned maps and program, which outlive the daemon\n\n")
	b.WriteString("# SEE ALSO\n\n")
	var refs []string
	for _, c := range visibleCommands(app.Commands) {
		refs = append(refs, fmt.Sprintf("**%s**(%d)", pageName(app, []string{c.Name}), manSection))
	}
	refs = append(refs, "**systemctl**(1)")
	b.WriteString(strings.Join(refs, ", ") + "\n")
	return b.String()
}

func commandPage(app *cli.App, path []string, c *cli.Command) string {
	var b strings.Builder
	name := pageName(app, path)
	b.WriteString(titleLine(name))
	fmt.Fprintf(&b, "# NAME\n\n%s - %s\n\n", name, manEscape(c.Usage))
	b.WriteString("# SYNOPSIS\n\n")
	fmt.Fprintf(&b, "**%s** [*global options*] **%s**", app.Name, strings.Join(path, " "))
	if len(c.VisibleFlags()) > 0 {
		b.WriteString(" [*options*]")
	}
	switch {
	case len(visibleCommands(c.Subcommands)) > 0:
		b.WriteString(" *command*")
	case c.ArgsUsage != "":
		fmt.Fprintf(&b, " %s", manEscape(c.ArgsUsage))
	}
	b.WriteString("\n\n")
	b.WriteString("# DESCRIPTION\n\n")
	fmt.Fprintf(&b, "%s.\n\n", manEscape(upperFirst(c.Usage)))
	if c.Description != "" {
		fmt.Fprintf(&b, "%s\n\n", manText(c.Description))
	}
	if flags := visibleFlags(c); len(flags) > 0 {
		b.WriteString("# OPTIONS\n\n")
		writeFlags(&b, flags)
	}
	if subs := visibleCommands(c.Subcommands); len(subs) > 0 {
		b.WriteString("# COMMANDS\n\n")
		writeCommands(&b, app, path, subs)
	}
	fmt.Fprintf(&b, "# GLOBAL OPTIONS\n\n**--socket**, **--output**, **--timeout**: see **%s**(%d).\n\n", app.Name, manSection)
	b.WriteString("# SEE ALSO\n\n")
	refs := []string{fmt.Sprintf("**%s**(%d)", app.Name, manSection)}
	if len(path) > 1 {
		refs = append(refs, fmt.Sprintf("**%s**(%d)", pageName(app, path[:len(path)-1]), manSection))
	}
	for _, s := range visibleCommands(c.Subcommands) {
		refs = append(refs, fmt.Sprintf("**%s**(%d)", pageName(app, append(append([]string{}, path...), s.Name)), manSection))
	}
	b.WriteString(strings.Join(refs, ", ") + "\n")
	return b.String()
}

// visibleFlags are a command's flags without urfave/cli's --help.
func visibleFlags(c *cli.Command) []cli.Flag {
	var out []cli.Flag
	for _, f := range c.VisibleFlags() {
		if f != cli.HelpFlag {
			out = append(out, f)
		}
	}
	return out
}

// writeFlags writes a definition list: each flag's names and value, then
// what it does and its default.
func writeFlags(b *strings.Builder, flags []cli.Flag) {
	for _, f := range flags {
		doc, ok := f.(cli.DocGenerationFlag)
		if !ok || f == cli.HelpFlag {
			continue
		}
		placeholder, usage := unquoteUsage(doc.GetUsage())
		var names []string
		for _, n := range f.Names() {
			names = append(names, "**"+manEscape(dashes(n))+"**")
		}
		term := strings.Join(names, ", ")
		if doc.TakesValue() {
			if placeholder == "" {
				placeholder = "value"
			}
			term += " *" + manEscape(placeholder) + "*"
		}
		desc := manEscape(usage)
		if doc.TakesValue() {
			def := doc.GetDefaultText()
			if def == "" {
				def = doc.GetValue()
			}
			if def != "" && def != `""` {
				desc += " (default: " + manEscape(def) + ")"
			}
		}
		if env, ok := f.(interface{ GetEnvVars() []string }); ok && len(env.GetEnvVars()) > 0 {
			desc += "; environment: " + manEscape(strings.Join(env.GetEnvVars(), ", "))
		}
		fmt.Fprintf(b, "%s\n: %s\n\n", term, desc)
	}
}

func writeCommands(b *strings.Builder, app *cli.App, parent []string, cmds []*cli.Command) {
	for _, c := range visibleCommands(cmds) {
		path := append(append([]string{}, parent...), c.Name)
		fmt.Fprintf(b, "**%s**\n: %s; see **%s**(%d)\n\n", c.Name, manEscape(c.Usage), pageName(app, path), manSection)
	}
}

// manText renders a help description: its blank lines separate
// paragraphs, and its single line breaks are kept.
func manText(s string) string {
	paras := strings.Split(strings.TrimSpace(s), "\n\n")
	for i, p := range paras {
		lines := strings.Split(p, "\n")
		for j, l := range lines {
			lines[j] = manEscape(l)
		}
		paras[i] = strings.Join(lines, "  \n")
	}
	return strings.Join(paras, "\n\n")
}

// manEscape keeps markdown from reading text as markup.
func manEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune("\\`*_[]<>#|", r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// unquoteUsage finds a flag's value placeholder as urfave/cli does: the
// first `quoted` word of its usage, which is printed unquoted.
func unquoteUsage(usage string) (placeholder, text string) {
	start := strings.IndexByte(usage, '`')
	if start < 0 {
		return "", usage
	}
	end := strings.IndexByte(usage[start+1:], '`')
	if end < 0 {
		return "", usage
	}
	placeholder = usage[start+1 : start+1+end]
	return placeholder, usage[:start] + placeholder + usage[start+2+end:]
}
