//go:build !linux

package router

// alive cannot peek portably; a connection closed by the instance while
// idle surfaces as an error on its next use instead.
func (pc *pconn) alive() bool { return true }

func (pc *pconn) probe(fd uintptr) bool { return true }

// kernelBytesAcked cannot be read portably: no request is rescued.
func kernelBytesAcked(pc *pconn) (uint64, bool) { return 0, false }
