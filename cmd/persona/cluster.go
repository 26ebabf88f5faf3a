package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

func clusterCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "members" {
		return clusterMembers(args[1:], stdout, stderr)
	}
	fmt.Fprintln(stderr, "usage: persona cluster members [--config FILE] [--url URL]")
	return errors.New("unknown cluster command")
}

// clusterMember is one row of the admin API's cluster members.
type clusterMember struct {
	Name      string `json:"name"`
	Address   string `json:"address"`
	ActorAddr string `json:"actor_address"`
	State     string `json:"state"`
	Ready     bool   `json:"ready"`
	Leaving   bool   `json:"leaving"`
	Led       []int  `json:"led"`
	Followed  []int  `json:"followed"`
	MetaError string `json:"metadata_error"`
}

// clusterMembers prints the members of a running node's cluster as that
// node sees them, through its admin API.
func clusterMembers(args []string, stdout, stderr io.Writer) error {
	var out struct {
		Self    string          `json:"self"`
		Members []clusterMember `json:"members"`
	}
	if err := adminCommand("cluster members", args, "/_persona/admin/v1/cluster/members", stderr, &out); err != nil {
		return err
	}
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tADDRESS\tACTOR ADDRESS\tSTATE\tREADY\tLED\tFOLLOWED")
	for _, m := range out.Members {
		name, state, ready := m.Name, m.State, "no"
		if m.Name == out.Self {
			name += " (this node)"
		}
		if m.Leaving && m.State != "left" {
			state += ", leaving"
		}
		if m.Ready {
			ready = "yes"
		}
		actor := orDash(m.ActorAddr)
		if m.MetaError != "" {
			actor = "? " + m.MetaError
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, m.Address, actor, state, ready, partitionRanges(m.Led), partitionRanges(m.Followed))
	}
	return w.Flush()
}

// partitionRanges writes ascending partitions as ranges ("0-3,7,9-12"),
// or "-" for none.
func partitionRanges(ps []int) string {
	if len(ps) == 0 {
		return "-"
	}
	var b strings.Builder
	for i := 0; i < len(ps); {
		j := i
		for j+1 < len(ps) && ps[j+1] == ps[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(ps[i]))
		if j > i {
			b.WriteString("-" + strconv.Itoa(ps[j]))
		}
		i = j + 1
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
