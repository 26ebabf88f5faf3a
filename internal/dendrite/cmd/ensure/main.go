// Command ensure builds the Dendrite binaries persona's tests run (once,
// into build/dendrite-<version>) and prints the folder that holds them.
// `make unit` runs it before `go test` so that test packages running in
// parallel all find the build done.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"persona/internal/dendrite"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "ensure dendrite: %v\n", err)
		os.Exit(1)
	}
}

// run builds Dendrite unless it is built, until SIGINT or SIGTERM.
func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir, err := dendrite.Ensure(ctx)
	if err != nil {
		return err
	}
	fmt.Println(dir)
	return nil
}
