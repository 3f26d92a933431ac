package router

import (
	"syscall"

	"golang.org/x/sys/unix"
)

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

// kernelBytesAcked is the kernel's count of the bytes the peer
// acknowledged on pc's connection (tcpi_bytes_acked, Linux 4.1 and later).
func kernelBytesAcked(pc *pconn) (uint64, bool) {
	if pc.rc == nil {
		return 0, false
	}
	var info *unix.TCPInfo
	var err error
	if cerr := pc.rc.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); cerr != nil || err != nil {
		return 0, false
	}
	return info.Bytes_acked, true
}
