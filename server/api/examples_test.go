package api

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/seraihq/serai/jobspec"
	"github.com/seraihq/serai/server/records"
	"github.com/seraihq/serai/server/smapi"
	"github.com/seraihq/serai/server/translate"
)

// TestExamplesThroughAPI: every example spec, sent as `serai apply`
// sends it (translate.FromSpec), is accepted as is and stored unchanged,
// so an HCL file and the equivalent API calls produce identical records.
func TestExamplesThroughAPI(t *testing.T) {
	paths, err := filepath.Glob("../../examples/*.hcl")
	if err != nil || len(paths) == 0 {
		t.Fatalf("examples: %v %v", paths, err)
	}
	for _, path := range paths {
		t.Run(filepath.Base(path), func(t *testing.T) {
			p := jobspec.NewParser()
			spec, diags := p.ParseFiles(path)
			if diags.HasErrors() {
				var b bytes.Buffer
				_ = p.WriteDiagnostics(&b, diags)
				t.Fatal(b.String())
			}
			reqs := translate.FromSpec(spec)
			e := newEnv(t)
			ctx := context.Background()
			for _, st := range reqs.Stores {
				e.operator("PutArtifactStore", mustJSON(t, st))
			}
			for _, m := range reqs.Models {
				e.ok("CreateModel", m)
				var rec records.Model
				if _, err := e.store.Get(ctx, records.KindModel, m.ModelName, &rec); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(rec.Spec, m) {
					t.Errorf("model %s stored as\n%+v\nsent\n%+v", m.ModelName, rec.Spec, m)
				}
			}
			for _, c := range reqs.EndpointConfigs {
				e.ok("CreateEndpointConfig", c)
				var rec records.EndpointConfig
				if _, err := e.store.Get(ctx, records.KindEndpointConfig, c.EndpointConfigName, &rec); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(rec.Spec, c) {
					t.Errorf("config %s stored as\n%+v\nsent\n%+v", c.EndpointConfigName, rec.Spec, c)
				}
			}
			for _, ep := range reqs.Endpoints {
				e.ok("CreateEndpoint", ep)
				rec := e.endpoint(ep.EndpointName)
				var ar *smapi.AutoRollback
				if ep.Serai != nil {
					ar = ep.Serai.AutoRollback
				}
				if rec.Op.ConfigName != ep.EndpointConfigName || !reflect.DeepEqual(rec.Deployment, ep.DeploymentConfig) || !reflect.DeepEqual(rec.AutoRollback, ar) {
					t.Errorf("endpoint %s stored as %+v", ep.EndpointName, rec)
				}
			}
		})
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
