package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
)

// completionCommand prints a shell script that completes fulcrum's
// commands and flags by asking the binary itself: urfave/cli answers a
// command line ending in --generate-bash-completion with the words that
// may come next.
func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script (bash or zsh)",
		ArgsUsage: "bash|zsh",
		Description: "bash: source <(fulcrum completion bash), or save it as\n" +
			"/etc/bash_completion.d/fulcrum.\n" +
			"zsh: fulcrum completion zsh > \"${fpath[1]}/_fulcrum\", then start a new shell.",
		Action: completion,
	}
}

var shellArg = arg{"SHELL", "bash or zsh"}

func completion(c *cli.Context) error {
	args, err := positional(c, []arg{shellArg})
	if err != nil {
		return err
	}
	script, ok := completionScripts[args[0]]
	if !ok {
		return usagef("%s: shell %q: want bash or zsh", commandPath(c), args[0])
	}
	_, err = fmt.Fprint(c.App.Writer, script)
	return err
}

var completionScripts = map[string]string{
	"bash": `# fulcrum completion for bash.
# Load it with: source <(fulcrum completion bash)
__fulcrum_words() {
	# Ask fulcrum for the words that may follow the line before the cursor.
	local words=("${COMP_WORDS[@]:1:COMP_CWORD-1}")
	local cur="${COMP_WORDS[COMP_CWORD]}"
	if [[ $cur == -* ]]; then
		words+=("$cur")
	fi
	"${COMP_WORDS[0]}" "${words[@]}" --generate-bash-completion 2>/dev/null
}
__fulcrum_complete() {
	local cur="${COMP_WORDS[COMP_CWORD]}"
	COMPREPLY=()
	local IFS=$'\n'
	COMPREPLY=($(compgen -W "$(__fulcrum_words)" -- "$cur"))
	return 0
}
complete -o bashdefault -o default -F __fulcrum_complete fulcrum
`,
	"zsh": `#compdef fulcrum
# fulcrum completion for zsh.
# Install it with: fulcrum completion zsh > "${fpath[1]}/_fulcrum"
# or, after compinit, load it with: source <(fulcrum completion zsh)
__fulcrum() {
	local cur=${words[CURRENT]}
	local -a line candidates
	line=("${(@)words[2,CURRENT-1]}")
	if [[ $cur == -* ]]; then
		line+=("$cur")
	fi
	candidates=("${(@f)$(${words[1]} "${(@)line}" --generate-bash-completion 2>/dev/null)}")
	# urfave/cli may answer "name:description"; keep the names.
	candidates=("${(@)candidates%%:*}")
	if (( ${#candidates} )) && [[ -n ${candidates[1]} ]]; then
		compadd -- "${(@)candidates}"
	else
		_files
	fi
}
# Autoloaded from fpath this file is the body of _fulcrum, so complete
# now; sourced, register the function.
if [[ ${funcstack[1]} == _fulcrum ]]; then
	__fulcrum "$@"
else
	compdef __fulcrum fulcrum
fi
`,
}

// setCompleter makes every command answer --generate-bash-completion from
// args (the command line as run got it) rather than from os.Args, which
// urfave/cli's default completer reads: candidates for the word before
// the marker if it is a partial flag, else the command's subcommands.
func setCompleter(app *cli.App, args []string) {
	var partial string
	if n := len(args); n >= 3 && args[n-1] == "--generate-bash-completion" && strings.HasPrefix(args[n-2], "-") {
		partial = args[n-2]
	}
	complete := func(c *cli.Context) {
		w := c.App.Writer
		if partial != "" {
			for _, f := range c.Command.VisibleFlags() {
				for _, name := range f.Names() {
					if form := dashes(name); strings.HasPrefix(form, partial) {
						fmt.Fprintln(w, form)
					}
				}
			}
			return
		}
		for _, sub := range c.Command.Subcommands {
			if !sub.Hidden {
				fmt.Fprintln(w, sub.Name)
			}
		}
	}
	app.BashComplete = complete
	var walk func([]*cli.Command)
	walk = func(cmds []*cli.Command) {
		for _, c := range cmds {
			c.BashComplete = complete
			walk(c.Subcommands)
		}
	}
	walk(app.Commands)
}
