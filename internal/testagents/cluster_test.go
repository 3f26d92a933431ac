package testagents

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCluster starts the three-datacenter cluster with a Docker daemon per
// datacenter and checks each client sits in its own datacenter at its own
// namespace address, that no namespace has a route off the machine, and,
// once the cluster's cleanup has run, that nothing of it is left:
// namespaces, links, mounts, processes.
func TestCluster(t *testing.T) {
	var c *Cluster
	var dirs []string
	t.Run("up", func(t *testing.T) {
		c = StartCluster(t, ClusterOptions{Docker: true})
		for _, n := range c.Nodes {
			node, _, err := c.Nomad.Nodes().Info(n.NodeID, nil)
			if err != nil {
				t.Fatal(err)
			}
			if node.Datacenter != n.Datacenter || node.Attributes["unique.network.ip-address"] != n.Addr {
				t.Errorf("node %s: datacenter %s address %s, want %s at %s", node.Name, node.Datacenter, node.Attributes["unique.network.ip-address"], n.Datacenter, n.Addr)
			}
			out, err := exec.Command("ip", "-n", n.Netns, "route", "show").CombinedOutput()
			if err != nil {
				t.Fatalf("routes of %s: %v: %s", n.Netns, err, out)
			}
			for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if strings.HasPrefix(line, "default") {
					t.Errorf("%s has a default route: %s", n.Netns, line)
				}
			}
			if cs := n.Docker.Containers(t); len(cs) != 0 {
				t.Errorf("%s: fresh daemon has %d containers", n.Datacenter, len(cs))
			}
			dirs = append(dirs, n.DataDir, strings.TrimPrefix(n.Docker.Host, "unix://"))
		}
		// Consul sees one member per datacenter plus the server.
		members, err := c.Consul.Client.Agent().Members(false)
		if err != nil || len(members) != len(c.Nodes)+1 {
			t.Errorf("consul members: %d, %v; want %d", len(members), err, len(c.Nodes)+1)
		}
	})
	if c == nil {
		return
	}
	// The subtest's cleanup has torn the cluster down.
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mounts), c.id) {
		t.Errorf("mounts of cluster %s left behind", c.id)
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("%s left behind", d)
		}
		if strings.Contains(string(mounts), filepath.Dir(d)) {
			t.Errorf("mounts under %s left behind", filepath.Dir(d))
		}
	}
	for _, pi := range listProcs() {
		if strings.Contains(pi.cmdline, c.id) {
			t.Errorf("process left behind: %d %s", pi.pid, pi.cmdline)
		}
	}
	if out, _ := exec.Command("ip", "-o", "link").CombinedOutput(); strings.Contains(string(out), c.id) {
		t.Errorf("links of cluster %s left behind:\n%s", c.id, out)
	}
}
