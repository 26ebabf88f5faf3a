package main

import (
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

func federationCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "destinations" {
		return federationDestinations(args[1:], stdout, stderr)
	}
	fmt.Fprintln(stderr, "usage: persona federation destinations [--config FILE] [--url URL]")
	return errors.New("unknown federation command")
}

// destination is one row of the admin API's destinations.
type destination struct {
	Destination string `json:"destination"`
	Queued      uint64 `json:"queued"`
	OldestAgeMs int64  `json:"oldest_age_ms"`
	TxnInFlight string `json:"txn_in_flight"`
	Failures    uint32 `json:"failures"`
	NextInMs    int64  `json:"next_attempt_in_ms"`
	NextTs      int64  `json:"next_attempt_ts"`
	Delivered   uint64 `json:"delivered_txns"`
	Dropped     uint64 `json:"dropped_pdus"`
}

// federationDestinations prints the state of each destination of a
// running node's federation outbox, through its admin API.
func federationDestinations(args []string, stdout, stderr io.Writer) error {
	var out struct {
		Destinations []destination `json:"destinations"`
	}
	if err := adminCommand("federation destinations", args, "/_persona/admin/v1/federation/destinations", stderr, &out); err != nil {
		return err
	}
	if len(out.Destinations) == 0 {
		fmt.Fprintln(stdout, "no destinations: nothing was ever queued for another server")
		return nil
	}
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "DESTINATION\tQUEUED\tOLDEST\tIN FLIGHT\tFAILURES\tNEXT ATTEMPT\tDELIVERED\tDROPPED")
	for _, d := range out.Destinations {
		oldest, txn, next := "-", "-", "-"
		if d.Queued > 0 {
			oldest = millis(d.OldestAgeMs) + " ago"
		}
		if d.TxnInFlight != "" {
			txn = d.TxnInFlight
		}
		if d.NextTs != 0 {
			next = "in " + millis(d.NextInMs)
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%d\t%s\t%d\t%d\n", d.Destination, d.Queued, oldest, txn, d.Failures, next, d.Delivered, d.Dropped)
	}
	return w.Flush()
}

// millis is a number of milliseconds as a duration to the second (to the
// millisecond under one).
func millis(n int64) string {
	d := time.Duration(n) * time.Millisecond
	if d >= time.Second {
		d = d.Round(time.Second)
	}
	return d.String()
}
