package deploy

import "syscall"

// sysProcAttr asks the kernel to kill a child when the test process that
// started it dies, so that a crashed or timed-out test leaves no
// Prometheus running.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
