package main

import (
	"strings"
	"testing"
)

// TestServerRefusesOpenAPI: serai server refuses, before it listens or
// touches an agent, an unauthenticated API beyond loopback and an
// --allow-drivers list naming a driver serai does not run.
func TestServerRefusesOpenAPI(t *testing.T) {
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"--listen", "0.0.0.0:0"}, []string{"not loopback", "--sigv4-keys", "--insecure-no-auth"}},
		{[]string{"--listen", ":0"}, []string{"not loopback"}},
		{[]string{"--allow-drivers", "exec,qemu"}, []string{`"qemu"`, "raw_exec"}},
	} {
		args := append([]string{"server", "--consul-addr", "127.0.0.1:1", "--nomad-addr", "http://127.0.0.1:1"}, c.args...)
		code, _, errs := runCLI(t, args...)
		if code != exitUsage {
			t.Errorf("serai %s: exit %d, want %d\n%s", strings.Join(args, " "), code, exitUsage, errs)
		}
		for _, w := range c.want {
			if !strings.Contains(errs, w) {
				t.Errorf("serai %s: stderr does not say %q:\n%s", strings.Join(args, " "), w, errs)
			}
		}
	}
}
