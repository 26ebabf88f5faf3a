package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"persona/config"
	"persona/internal/node"
)

// stopTimeout bounds a stop beyond cluster.drain_delay: handing the
// partitions over and leaving, the requests in flight, the actors'
// last writes.
const stopTimeout = 15 * time.Second

// defaultConfigFile is read when --config is not given.
const defaultConfigFile = "persona.yaml"

// loadConfig reads --config, else ./persona.yaml, else the defaults (with env
// overrides), and says which.
func loadConfig(path string, stderr io.Writer) (*config.Config, error) {
	if path == "" {
		if _, err := os.Stat(defaultConfigFile); err != nil {
			fmt.Fprintln(stderr, "persona: no --config and no ./persona.yaml: using the defaults")
			return config.Parse(nil)
		}
		path = defaultConfigFile
	}
	return config.Load(path)
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(strings.ToUpper(cfg.Log.Level)))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func serve(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config file (default ./persona.yaml if present)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*path, stderr)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	n, err := node.Start(cfg, log)
	if err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case s := <-sig:
		log.Info("stopping", "signal", s.String())
	case err = <-n.Failed():
		log.Error("listener failed", "err", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout+cfg.Cluster.DrainDelay)
	defer cancel()
	if e := n.Stop(ctx); e != nil && !errors.Is(e, context.DeadlineExceeded) {
		log.Error("stop", "err", e)
	}
	log.Info("stopped")
	return err
}

func generateConfig(args []string, stdout io.Writer) error {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
		fmt.Fprintln(stdout, "persona generate-config > persona.yaml   prints a commented config holding the defaults")
		return nil
	}
	_, err := stdout.Write(config.Generate())
	return err
}
