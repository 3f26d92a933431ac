package translate

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/seraihq/serai/jobspec"
	"github.com/seraihq/serai/scheduler"
	"github.com/seraihq/serai/server/smapi"
)

var update = flag.Bool("update", false, "rewrite testdata/*.requests.json")

func parse(t *testing.T, path string) *jobspec.Spec {
	t.Helper()
	p := jobspec.NewParser()
	spec, diags := p.ParseFiles(path)
	if diags.HasErrors() {
		var b bytes.Buffer
		p.WriteDiagnostics(&b, diags)
		t.Fatalf("%s:\n%s", path, b.String())
	}
	return spec
}

func examples(t *testing.T) []string {
	paths, err := filepath.Glob("../../examples/*.hcl")
	if err != nil || len(paths) < 3 {
		t.Fatalf("examples: %v %v", paths, err)
	}
	return paths
}

func input(r Requests) Input {
	var in Input
	for i := range r.Stores {
		in.Stores = append(in.Stores, &r.Stores[i].ArtifactStore)
	}
	for i := range r.Models {
		in.Models = append(in.Models, &r.Models[i])
	}
	for i := range r.EndpointConfigs {
		in.EndpointConfigs = append(in.EndpointConfigs, &r.EndpointConfigs[i])
	}
	for i := range r.Endpoints {
		in.Endpoints = append(in.Endpoints, &r.Endpoints[i])
	}
	return in
}

func compileAll(t *testing.T, s *jobspec.Spec) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, ep := range jobspec.SortedNames(s.Endpoints) {
		job, err := scheduler.Compile(s, ep, 1, scheduler.Options{})
		if err != nil {
			t.Fatal(err)
		}
		b, err := scheduler.MarshalJob(job)
		if err != nil {
			t.Fatal(err)
		}
		out[ep] = b
	}
	return out
}

// HCL → API → spec compiles to the very same Nomad jobs as HCL → spec,
// and the requests are a fixed point of the round trip.
func TestRoundTripCompilesIdentically(t *testing.T) {
	for _, path := range examples(t) {
		spec := parse(t, path)
		reqs := FromSpec(spec)
		back, err := ToSpec(input(reqs))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if diags := jobspec.Validate(back); diags.HasErrors() {
			t.Fatalf("%s: round-tripped spec does not validate: %v", path, diags)
		}
		want, got := compileAll(t, spec), compileAll(t, back)
		for ep := range want {
			if !bytes.Equal(want[ep], got[ep]) {
				t.Errorf("%s endpoint %s: job compiled from API requests differs from the HCL's", path, ep)
			}
		}
		if again := FromSpec(back); !reflect.DeepEqual(again, reqs) {
			a, _ := json.MarshalIndent(reqs, "", " ")
			b, _ := json.MarshalIndent(again, "", " ")
			t.Errorf("%s: requests are not a fixed point:\n%s\n---\n%s", path, a, b)
		}
	}
}

// The checked-in JSON is what a user of the API (an SDK, Terraform) sends
// for each example; it must give the same records as the HCL. Run
// `go test ./server/translate -update` after an intended change.
func TestRequestsGolden(t *testing.T) {
	for _, path := range examples(t) {
		reqs := FromSpec(parse(t, path))
		gp := filepath.Join("testdata", strings.TrimSuffix(filepath.Base(path), ".hcl")+".requests.json")
		got, err := json.MarshalIndent(reqs, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if *update {
			if err := os.WriteFile(gp, append(got, '\n'), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(gp)
		if err != nil {
			t.Fatalf("%v (run with -update)", err)
		}
		var fromAPI Requests
		if err := json.Unmarshal(want, &fromAPI); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(fromAPI, reqs) {
			t.Errorf("%s: the API requests in %s no longer equal the HCL's translation", path, gp)
		}
	}
}

// A model's store member contributes its name only: whatever endpoint or
// Vault path a request puts there, the compiled spec holds the operator
// record's (the API refuses such members anyway; this is the second wall).
func TestStoreComesFromTheRecordOnly(t *testing.T) {
	rec := &smapi.ArtifactStore{Name: "s", Endpoint: "http://one", Vault: &smapi.StoreVault{KVPath: "stores/s"}}
	m := &smapi.CreateModelInput{ModelName: "a", PrimaryContainer: &smapi.ContainerDefinition{Image: "x", ModelDataUrl: "s3://b/k"},
		Serai: &smapi.ModelExtension{ArtifactStore: &smapi.ArtifactStore{Name: "s", Endpoint: "http://evil", Vault: &smapi.StoreVault{KVPath: "stores/other"}}}}
	s, err := ToSpec(Input{Stores: []*smapi.ArtifactStore{rec}, Models: []*smapi.CreateModelInput{m}})
	if err != nil {
		t.Fatal(err)
	}
	got := s.ArtifactStores["s"]
	if got.Endpoint != "http://one" || got.CredentialPath() != "secret/data/stores/s" {
		t.Errorf("store = %+v (%s), want the record's", got, got.CredentialPath())
	}
	// A store the records do not hold is unknown, whatever the request says.
	s, err = ToSpec(Input{Models: []*smapi.CreateModelInput{m}})
	if err != nil {
		t.Fatal(err)
	}
	if diags := jobspec.Validate(s); !diags.HasErrors() || !strings.Contains(diags.Error(), `artifact_store "s"`) {
		t.Errorf("want an unknown store, got %v", diags)
	}
}

// API requests are validated with the HCL's rules; the details name the
// object and field.
func TestValidationOfAPIRequests(t *testing.T) {
	m := &smapi.CreateModelInput{ModelName: "m", PrimaryContainer: &smapi.ContainerDefinition{Image: "x", ModelDataUrl: "ftp://nope"}}
	s, err := ToSpec(Input{Models: []*smapi.CreateModelInput{m}})
	if err != nil {
		t.Fatal(err)
	}
	diags := jobspec.Validate(s)
	if !diags.HasErrors() || !strings.Contains(diags.Error(), `model "m"`) || !strings.Contains(diags.Error(), "artifact") {
		t.Errorf("got %v", diags)
	}
}
