//go:build !linux

package router

// alive cannot peek portably; a connection closed by the instance while
// idle surfaces as an error on its next use instead.
func (pc *pconn) alive() bool { return true }

func (pc *pconn) probe(fd uintptr) bool { return true }
