//go:build !linux

package deploy

import "syscall"

// sysProcAttr returns no attributes: only Linux can tie a child's life to
// the test process.
func sysProcAttr() *syscall.SysProcAttr {
	return nil
}
