package e2e

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// TestVagrantfileSyntax checks the Vagrantfile's Ruby syntax; booting the
// VMs needs VirtualBox and Vagrant, which CI does not have.
func TestVagrantfileSyntax(t *testing.T) {
	if _, err := exec.LookPath("ruby"); err != nil {
		t.Skip("ruby not on PATH: apt-get install ruby (.ci/run does)")
	}
	if out, err := exec.Command("ruby", "-c", "../Vagrantfile").CombinedOutput(); err != nil {
		t.Fatalf("ruby -c Vagrantfile: %v\n%s", err, out)
	}
}

// TestProvisioningScripts runs shellcheck over the Vagrant provisioning
// scripts.
func TestProvisioningScripts(t *testing.T) {
	if _, err := exec.LookPath("shellcheck"); err != nil {
		t.Skip("shellcheck not on PATH: apt-get install shellcheck (.ci/run does)")
	}
	scripts, _ := filepath.Glob("../scripts/vagrant/*.sh")
	if len(scripts) == 0 {
		t.Fatal("no scripts in scripts/vagrant")
	}
	if out, err := exec.Command("shellcheck", scripts...).CombinedOutput(); err != nil {
		t.Fatalf("shellcheck: %v\n%s", err, out)
	}
}
