// Package cputime reads the process's CPU time, for benchmarks that report
// the work done as well as the time taken: a busy machine disturbs the
// first less.
package cputime

import (
	"syscall"
	"time"
)

// Process is the user and system CPU time the process has used so far.
func Process() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
