//go:build !linux

package dendrite

import "syscall"

// sysProcAttr returns no attributes: only Linux can tie the peer's life to
// the test process.
func sysProcAttr() *syscall.SysProcAttr {
	return nil
}
