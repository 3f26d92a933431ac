package devstack

import (
	"strings"
	"testing"
)

func TestUnescapeMount(t *testing.T) {
	if got := unescapeMount(`/tmp/a\040b/c`); got != "/tmp/a b/c" {
		t.Errorf("unescapeMount = %q", got)
	}
}

func TestNomadConfigStaysOnLoopback(t *testing.T) {
	c := NomadConfig(NomadConfigOptions{Name: "n", DataDir: "/d", HTTP: 1, RPC: 2, Serf: 3, ConsulAddr: "127.0.0.1:9", VaultAddr: "http://127.0.0.1:8"})
	for _, want := range []string{`bind_addr            = "127.0.0.1"`, `disable_update_check = true`, FingerprintDenylist, `jwt_auth_backend_path = "jwt-nomad"`, `address = "127.0.0.1:9"`} {
		if !strings.Contains(c, want) {
			t.Errorf("config lacks %q:\n%s", want, c)
		}
	}
}
