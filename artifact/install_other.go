//go:build !linux

package artifact

import (
	"errors"
	"os"
	"syscall"
)

// exchange swaps two directories. Without renameat2 there is a moment when
// b is missing; Nomad clients run Linux, this serves development machines.
func exchange(a, b string) error {
	tmp := a + ".old"
	if err := os.Rename(b, tmp); err != nil {
		return err
	}
	if err := os.Rename(a, b); err != nil {
		_ = os.Rename(tmp, b)
		return err
	}
	return os.Rename(tmp, a)
}

func isNotEmpty(err error) bool { return errors.Is(err, syscall.ENOTEMPTY) }
