package dendrite

import "syscall"

// sysProcAttr asks the kernel to kill the peer when the test process that
// started it dies, so that a crashed or timed-out test leaves no Dendrite
// running.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
