package apply

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"

	"github.com/seraihq/serai/jobspec"
	"github.com/seraihq/serai/server/client"
	"github.com/seraihq/serai/server/smapi"
	"github.com/seraihq/serai/server/translate"
)

// fake is an in-memory serai API for logic tests. An endpoint operation
// advances one status per DescribeEndpoint along a script.
type fake struct {
	mu        sync.Mutex
	models    map[string]smapi.CreateModelInput
	configs   map[string]smapi.CreateEndpointConfigInput
	endpoints map[string]*fakeEndpoint
	writes    []string
	// rollback makes updates to this config roll back.
	rollback string
	// describeErrs are returned by the next DescribeEndpoint calls.
	describeErrs []error
}

type fakeEndpoint struct {
	config, target string
	status         string
	reason         string
	script         []string // statuses still to come
	deleting       bool
}

func newFake() *fake {
	return &fake{models: map[string]smapi.CreateModelInput{}, configs: map[string]smapi.CreateEndpointConfigInput{}, endpoints: map[string]*fakeEndpoint{}}
}

var _ API = (*fake)(nil)

func notFound(what, name string) error {
	return &client.Error{Operation: "Describe", StatusCode: 400, Type: smapi.ErrValidation, Message: fmt.Sprintf("Could not find %s %q.", what, name)}
}

func (f *fake) wrote(op, name string) {
	f.writes = append(f.writes, op+" "+name)
}

func (f *fake) DescribeModel(_ context.Context, in *smapi.DescribeModelInput) (*smapi.DescribeModelOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.models[in.ModelName]
	if !ok {
		return nil, notFound("model", in.ModelName)
	}
	return &smapi.DescribeModelOutput{ModelName: m.ModelName, PrimaryContainer: m.PrimaryContainer, Serai: m.Serai}, nil
}

func (f *fake) CreateModel(_ context.Context, in *smapi.CreateModelInput) (*smapi.CreateModelOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.wrote("CreateModel", in.ModelName)
	f.models[in.ModelName] = *in
	return &smapi.CreateModelOutput{}, nil
}

func (f *fake) DescribeEndpointConfig(_ context.Context, in *smapi.DescribeEndpointConfigInput) (*smapi.DescribeEndpointConfigOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.configs[in.EndpointConfigName]
	if !ok {
		return nil, notFound("endpoint configuration", in.EndpointConfigName)
	}
	return &smapi.DescribeEndpointConfigOutput{EndpointConfigName: c.EndpointConfigName, ProductionVariants: c.ProductionVariants,
		ShadowProductionVariants: c.ShadowProductionVariants, DataCaptureConfig: c.DataCaptureConfig, Serai: c.Serai}, nil
}

func (f *fake) CreateEndpointConfig(_ context.Context, in *smapi.CreateEndpointConfigInput) (*smapi.CreateEndpointConfigOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.wrote("CreateEndpointConfig", in.EndpointConfigName)
	f.configs[in.EndpointConfigName] = *in
	return &smapi.CreateEndpointConfigOutput{}, nil
}

func (f *fake) CreateEndpoint(_ context.Context, in *smapi.CreateEndpointInput) (*smapi.CreateEndpointOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.wrote("CreateEndpoint", in.EndpointName)
	f.endpoints[in.EndpointName] = &fakeEndpoint{target: in.EndpointConfigName, status: smapi.StatusCreating, script: []string{smapi.StatusCreating, smapi.StatusInService}}
	return &smapi.CreateEndpointOutput{}, nil
}

func (f *fake) UpdateEndpoint(_ context.Context, in *smapi.UpdateEndpointInput) (*smapi.UpdateEndpointOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.wrote("UpdateEndpoint", in.EndpointName)
	e := f.endpoints[in.EndpointName]
	e.target, e.status, e.reason = in.EndpointConfigName, smapi.StatusUpdating, ""
	e.script = []string{smapi.StatusUpdating, smapi.StatusInService}
	if in.EndpointConfigName == f.rollback {
		e.script = []string{smapi.StatusUpdating, smapi.StatusRollingBack, smapi.StatusInService}
	}
	return &smapi.UpdateEndpointOutput{}, nil
}

func (f *fake) DescribeEndpoint(_ context.Context, in *smapi.DescribeEndpointInput) (*smapi.DescribeEndpointOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.describeErrs) > 0 {
		err := f.describeErrs[0]
		f.describeErrs = f.describeErrs[1:]
		return nil, err
	}
	e, ok := f.endpoints[in.EndpointName]
	if !ok {
		return nil, notFound("endpoint", in.EndpointName)
	}
	if len(e.script) > 0 {
		e.status, e.script = e.script[0], e.script[1:]
		switch e.status {
		case smapi.StatusRollingBack:
			e.reason = fmt.Sprintf("update to %q rolled back: variant v1 never became healthy", e.target)
			e.target = ""
		case smapi.StatusInService:
			if e.target != "" {
				e.config = e.target
			}
			e.target = ""
		}
		if e.deleting && len(e.script) == 0 {
			delete(f.endpoints, in.EndpointName)
		}
	}
	d := &smapi.DescribeEndpointOutput{EndpointName: in.EndpointName, EndpointStatus: e.status, EndpointConfigName: e.config, FailureReason: e.reason}
	if e.config == "" {
		d.EndpointConfigName = e.target
	}
	var names []string
	if c, ok := f.configs[d.EndpointConfigName]; ok {
		for _, v := range c.ProductionVariants {
			names = append(names, v.VariantName)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		healthy := 0
		if e.status == smapi.StatusInService {
			healthy = 1
		}
		d.ProductionVariants = append(d.ProductionVariants, smapi.ProductionVariantSummary{VariantName: n, CurrentWeight: 1, DesiredWeight: 1, CurrentInstanceCount: healthy, DesiredInstanceCount: 1})
	}
	if e.config != "" && e.target != "" {
		d.PendingDeploymentSummary = &smapi.PendingDeploymentSummary{EndpointConfigName: e.target}
	}
	return d, nil
}

// spec parses HCL source and translates it.
func spec(t *testing.T, src string) translate.Requests {
	t.Helper()
	s, diags := jobspec.NewParser().Parse(jobspec.Source{Name: "test.hcl", Bytes: []byte(src)})
	if diags.HasErrors() {
		t.Fatalf("spec: %v", diags)
	}
	return translate.FromSpec(s)
}

func models(image string) string {
	return `
model "m1" {
  command = "/bin/model"
  artifact = "file:///models/m1.tar.gz"
}
model "m2" {
  command = "/bin/model"
  args = ["--image", "` + image + `"]
  artifact = "file:///models/m2.tar.gz"
}
`
}

func config(name string, count int) string {
	return fmt.Sprintf(`
endpoint_config %q {
  variant "v1" {
    model = "m1"
    instance_type = "ml.m5.large"
    instance_count = %d
    weight = 1
  }
  variant "v2" {
    model = "m2"
    instance_type = "ml.m5.large"
    weight = 1
  }
}
`, name, count)
}

func endpoint(cfg string) string {
	return fmt.Sprintf("endpoint \"ep\" {\n  config = %q\n}\n", cfg)
}
