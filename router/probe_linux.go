package router

import "syscall"

// alive peeks at an idle connection without blocking. An instance that
// closed the connection while it sat idle (gunicorn's default keep-alive is
// 2 s) has left a FIN in the socket; sending a request into it would fail
// after the body was written, when retrying is no longer safe.
func (pc *pconn) alive() bool {
	if pc.rc == nil {
		return true
	}
	pc.probeDead = false
	if err := pc.rc.Read(pc.probeFn); err != nil {
		return false
	}
	return !pc.probeDead
}

func (pc *pconn) probe(fd uintptr) bool {
	n, _, err := syscall.Recvfrom(int(fd), pc.probeBuf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	switch {
	case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK:
		// Nothing to read: open and quiet, as an idle connection should be.
	case err != nil, n == 0:
		pc.probeDead = true // reset or EOF
	default:
		// Unsolicited bytes: the stream is out of step.
		pc.probeDead = true
	}
	return true
}
