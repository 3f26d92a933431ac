package testagents

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/seraihq/serai/contract"
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

// TestClusterConsulACLs starts the cluster with Consul ACLs on (default
// deny, the policies of deploy/consul) and checks that every datacenter's
// Nomad client registers a model task's service serai-* through its own
// Consul client agent with the Nomad agents' token, while the anonymous
// token sees no service at all.
func TestClusterConsulACLs(t *testing.T) {
	c := StartCluster(t, ClusterOptions{ConsulACL: true})
	if c.Consul.Tokens.Nomad == "" {
		t.Fatal("no Nomad token made")
	}
	name := contract.ServiceName("acl")
	job := &nomadapi.Job{
		ID: ptrTo("acl"), Name: ptrTo("acl"), Type: ptrTo("system"), Datacenters: []string{"*"},
		TaskGroups: []*nomadapi.TaskGroup{{
			Name:     ptrTo("g"),
			Networks: []*nomadapi.NetworkResource{{DynamicPorts: []nomadapi.Port{{Label: "http"}}}},
			Services: []*nomadapi.Service{{Name: name, Provider: "consul", PortLabel: "http", Meta: contract.ServiceMeta("acl", 1)}},
			Tasks: []*nomadapi.Task{{
				Name: "t", Driver: "raw_exec",
				Config:    map[string]any{"command": "/bin/sleep", "args": []string{"600"}},
				Resources: &nomadapi.Resources{CPU: ptrTo(20), MemoryMB: ptrTo(16)},
			}},
		}},
	}
	if _, _, err := c.Nomad.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := waitFor(ctx, nil, "one serai-acl instance per datacenter in the catalog", func(ctx context.Context) error {
		entries, _, err := c.Consul.Client.Catalog().Service(name, "", (&consulapi.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return err
		}
		if len(entries) != len(c.Nodes) {
			return fmt.Errorf("%d of %d", len(entries), len(c.Nodes))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	anon, err := c.Consul.NewClient("")
	if err != nil {
		t.Fatal(err)
	}
	if svcs, _, err := anon.Catalog().Services(nil); err == nil && len(svcs) > 0 {
		t.Errorf("anonymous lists services: %v", svcs)
	}
}

func ptrTo[T any](v T) *T { return &v }
