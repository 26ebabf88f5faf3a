// Command persona is the profile and membership-propagation engine of a
// Matrix homeserver. One binary, several subcommands: serve, generate-config,
// user, federation, cluster, bench.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

const usage = `persona: the profile and membership-propagation engine of a Matrix homeserver

Usage:
  persona serve [--config FILE]              start a node (default config: ./persona.yaml)
  persona generate-config                    print a commented default config
  persona user create NAME [--admin] [--password PW] [--config FILE]
                                             register a user on a running node, print its token
  persona user pending @user:server          show the rooms a user's latest profile has not reached yet
  persona federation destinations            show each destination server's outbox: queue, failures, next attempt
  persona cluster members                    show the cluster's nodes as a node sees them: address, state, readiness, partitions
  persona bench profile [flags]              load a running node with profile reads and writes
  persona bench propagation --rooms N        time one rename's fan-out to N rooms
  persona version                            print the version

Run 'persona COMMAND --help' for a command's flags.
`

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "persona:", err)
		}
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		return serve(rest, stderr)
	case "generate-config":
		return generateConfig(rest, stdout)
	case "user":
		return userCmd(rest, stdout, stderr)
	case "federation":
		return federationCmd(rest, stdout, stderr)
	case "cluster":
		return clusterCmd(rest, stdout, stderr)
	case "bench":
		return benchCmd(rest, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "persona", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}
