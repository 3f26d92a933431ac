package apply

import (
	"context"
	"strings"
	"testing"

	"github.com/seraihq/serai/server/client"
	"github.com/seraihq/serai/server/smapi"
)

// fakeStores answers as a server does for a user key: describes the
// stores it allows, refuses every put.
type fakeStores struct {
	records  map[string]smapi.DescribeArtifactStoreOutput
	operator bool
	puts     []string
}

func (f *fakeStores) DescribeArtifactStore(_ context.Context, in *smapi.DescribeArtifactStoreInput) (*smapi.DescribeArtifactStoreOutput, error) {
	d, ok := f.records[in.Name]
	if !ok {
		return nil, &client.Error{Operation: "DescribeArtifactStore", StatusCode: 400, Type: smapi.ErrValidation, Message: "does not exist or this caller may not use it"}
	}
	return &d, nil
}

func (f *fakeStores) PutArtifactStore(_ context.Context, in *smapi.PutArtifactStoreInput) (*smapi.PutArtifactStoreOutput, error) {
	if !f.operator {
		return nil, &client.Error{Operation: "PutArtifactStore", StatusCode: 400, Type: smapi.ErrAccessDenied, Message: "PutArtifactStore is an operator operation"}
	}
	f.puts = append(f.puts, in.ArtifactStore.Name)
	return &smapi.PutArtifactStoreOutput{Created: true}, nil
}

func TestEnsureStores(t *testing.T) {
	same := smapi.PutArtifactStoreInput{ArtifactStore: smapi.ArtifactStore{Name: "a", Endpoint: "http://s3"}, AllowedPrincipals: []string{"K2", "K1"}}
	f := &fakeStores{records: map[string]smapi.DescribeArtifactStoreOutput{
		"a": {ArtifactStore: same.ArtifactStore, AllowedPrincipals: []string{"K1", "K2"}},
	}}
	// A user repeating the operator's store exactly: nothing to put.
	put, err := EnsureStores(context.Background(), f, []smapi.PutArtifactStoreInput{same})
	if err != nil || len(put) != 0 {
		t.Fatalf("unchanged store: put %v, %v", put, err)
	}
	// A user changing it, or adding one: refused, saying who may.
	changed := same
	changed.ArtifactStore.Endpoint = "http://elsewhere"
	for _, in := range []smapi.PutArtifactStoreInput{changed, {ArtifactStore: smapi.ArtifactStore{Name: "new"}}} {
		_, err := EnsureStores(context.Background(), f, []smapi.PutArtifactStoreInput{in})
		if err == nil || !strings.Contains(err.Error(), "an operator must create or change it") || !strings.Contains(err.Error(), `"`+in.ArtifactStore.Name+`"`) {
			t.Errorf("user putting %s: %v", in.ArtifactStore.Name, err)
		}
	}
	// An operator puts what differs.
	f.operator = true
	put, err = EnsureStores(context.Background(), f, []smapi.PutArtifactStoreInput{same, changed})
	if err != nil || strings.Join(put, ",") != "a" {
		t.Fatalf("operator: put %v, %v", put, err)
	}
}
