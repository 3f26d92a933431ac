package apply

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"

	"github.com/seraihq/serai/server/client"
	"github.com/seraihq/serai/server/smapi"
)

// StoreAPI is what EnsureStores needs: serai's operator operations on
// artifact stores (server/client implements it).
type StoreAPI interface {
	DescribeArtifactStore(context.Context, *smapi.DescribeArtifactStoreInput) (*smapi.DescribeArtifactStoreOutput, error)
	PutArtifactStore(context.Context, *smapi.PutArtifactStoreInput) (*smapi.PutArtifactStoreOutput, error)
}

var _ StoreAPI = (*client.Client)(nil)

// EnsureStores makes the server's artifact stores match the spec's
// artifact_store blocks, before any model names them. Stores are
// operator-owned: a store that already exists as written is left alone
// (so a user may apply a spec that repeats an operator's store), while
// creating or changing one needs an operator's key, and a user's attempt
// fails with an error saying so. It returns the names it put.
func EnsureStores(ctx context.Context, api StoreAPI, stores []smapi.PutArtifactStoreInput) ([]string, error) {
	var put []string
	for i := range stores {
		want := stores[i]
		d, err := api.DescribeArtifactStore(ctx, &smapi.DescribeArtifactStoreInput{Name: want.ArtifactStore.Name})
		if err == nil && reflect.DeepEqual(d.ArtifactStore, want.ArtifactStore) && samePrincipals(d.AllowedPrincipals, want.AllowedPrincipals) {
			continue
		}
		if err != nil && !isValidation(err) {
			return put, fmt.Errorf("artifact_store %q: %w", want.ArtifactStore.Name, err)
		}
		if _, err := api.PutArtifactStore(ctx, &want); err != nil {
			var ce *client.Error
			if errors.As(err, &ce) && ce.Type == smapi.ErrAccessDenied {
				return put, fmt.Errorf("artifact_store %q: artifact stores are operator-owned and this one is missing or differs from the spec; an operator must create or change it (serai store put with an operator key), or leave the block out and name the operator's store: %w", want.ArtifactStore.Name, err)
			}
			return put, fmt.Errorf("artifact_store %q: %w", want.ArtifactStore.Name, err)
		}
		put = append(put, want.ArtifactStore.Name)
	}
	return put, nil
}

func samePrincipals(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// isValidation: the store does not exist (or the caller may not see it).
func isValidation(err error) bool {
	var ce *client.Error
	return errors.As(err, &ce) && ce.Type == smapi.ErrValidation
}
