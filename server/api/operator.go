package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strings"

	"github.com/seraihq/serai/internal/sigv4"
	"github.com/seraihq/serai/jobspec"
	"github.com/seraihq/serai/policies"
	"github.com/seraihq/serai/server/records"
	"github.com/seraihq/serai/server/smapi"
	"github.com/seraihq/serai/server/translate"
)

// Who may do what with artifact stores
//
// An artifact store is where a model's artifact lives and, through its
// Vault path, whose keys the model's fetch task may read. Stores are
// therefore operator-owned records (serai/stores/<name>): only an
// operator puts or deletes one (Serai.PutArtifactStore, `serai store
// put`, `serai server --stores`), and each record lists the principals
// (SigV4 access key IDs) allowed to name it. CreateModel and
// CreateEndpointConfig name a store and nothing more: every other member
// of their store object is refused, the store must exist and allow the
// caller, and the reconciler later compiles the job and writes the
// model's Vault policy from the record, never from the request.
//
// Operators are the callers signing with a key of --operator-keys. A
// server running without authentication (loopback only: `serai dev`, the
// e2e suites) treats its caller as an operator: whoever can reach it can
// already do anything it can.

// principalKey carries the verified access key ID of a request.
type principalKey struct{}

// withPrincipal records the access key ID a request was verified with.
func withPrincipal(ctx context.Context, akid string) context.Context {
	return context.WithValue(ctx, principalKey{}, akid)
}

// principal is the caller's verified access key ID; "" without
// authentication.
func principal(ctx context.Context) string {
	p, _ := ctx.Value(principalKey{}).(string)
	return p
}

// isOperator reports whether the caller may run operator operations and
// name any store.
func (h *Handler) isOperator(ctx context.Context) bool {
	if h.auth == nil {
		return true
	}
	if v, _ := ctx.Value(configOperatorKey{}).(bool); v {
		return true
	}
	ops := h.operators.Load()
	return ops != nil && (*ops)[principal(ctx)]
}

func accessDenied(format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, code: smapi.ErrAccessDenied, msg: fmt.Sprintf(format, args...)}
}

func (h *Handler) requireOperator(ctx context.Context, op string) error {
	if h.isOperator(ctx) {
		return nil
	}
	return accessDenied("%s is an operator operation: artifact stores are operator-owned, and access key %q is not an operator key (serai server --operator-keys).", op, principal(ctx))
}

// loadKeys reads the user and operator key files and merges them into
// the verifier's table; it returns the operator key IDs. One ID in both
// files with different secrets is an error rather than a guess.
func loadKeys(userFile, operatorFile string) (map[string]string, map[string]bool, error) {
	all := map[string]string{}
	if userFile != "" {
		keys, err := sigv4.LoadKeys(userFile)
		if err != nil {
			return nil, nil, fmt.Errorf("api: SigV4 keys: %w", err)
		}
		for k, v := range keys {
			all[k] = v
		}
	}
	ops := map[string]bool{}
	if operatorFile != "" {
		keys, err := sigv4.LoadKeys(operatorFile)
		if err != nil {
			return nil, nil, fmt.Errorf("api: operator keys: %w", err)
		}
		for k, v := range keys {
			if prev, ok := all[k]; ok && prev != v {
				return nil, nil, fmt.Errorf("api: access key %q is in both the SigV4 and the operator key files with different secrets", k)
			}
			all[k] = v
			ops[k] = true
		}
	}
	return all, ops, nil
}

// operatorOps are served under X-Amz-Target: Serai.<Operation>.
var operatorOps = map[string]opFunc{
	"PutArtifactStore":      op((*Handler).putArtifactStore),
	"DescribeArtifactStore": op((*Handler).describeArtifactStore),
	"ListArtifactStores":    op((*Handler).listArtifactStores),
	"DeleteArtifactStore":   op((*Handler).deleteArtifactStore),
}

// lookup finds the operation an X-Amz-Target names and the name it is
// logged under.
func (h *Handler) lookup(target string) (opFunc, string, bool) {
	if name, ok := strings.CutPrefix(target, TargetPrefix); ok {
		fn, ok := h.ops[name]
		return fn, name, ok
	}
	if name, ok := strings.CutPrefix(target, smapi.OperatorTargetPrefix); ok {
		fn, ok := operatorOps[name]
		return fn, target, ok
	}
	return nil, "", false
}

var principalRE = regexp.MustCompile(`^[A-Za-z0-9]{1,128}$`)

func (h *Handler) putArtifactStore(ctx context.Context, in *smapi.PutArtifactStoreInput) (*smapi.PutArtifactStoreOutput, error) {
	if err := h.requireOperator(ctx, "PutArtifactStore"); err != nil {
		return nil, err
	}
	var f fieldErrors
	st := in.ArtifactStore
	f.name("artifactStore.name", st.Name)
	for i, p := range in.AllowedPrincipals {
		if p != "*" && !principalRE.MatchString(p) {
			f.bad(member("allowedPrincipals", i), p, "Member must be an access key ID (letters and digits, 1 to 128) or *")
		}
	}
	if err := f.err(); err != nil {
		return nil, err
	}
	if err := semantic(translate.Input{Stores: []*smapi.ArtifactStore{&st}}); err != nil {
		return nil, err
	}
	// The policy writer's own check, stricter than the spec's: what it
	// would refuse at deploy time is refused now.
	if _, err := storeCredentials(&st).Path(); err != nil {
		return nil, validationf("artifactStore.vault: %v", err)
	}
	principals := append([]string(nil), in.AllowedPrincipals...)
	sort.Strings(principals)
	created := false
	err := retry(ctx, func() error {
		cur, err := load[records.ArtifactStore](ctx, h.cfg.Store, records.KindStore, st.Name)
		switch {
		case errors.Is(err, records.ErrNotFound):
			created = true
			rec := &records.ArtifactStore{Name: st.Name, CreationTime: h.cfg.Now().UTC(), Settings: st, AllowedPrincipals: principals}
			return h.create(ctx, records.KindStore, st.Name, rec)
		case err != nil:
			return err
		}
		created = false
		rec := *cur.v
		rec.Settings, rec.AllowedPrincipals = st, principals
		return h.replace(ctx, records.KindStore, st.Name, &rec, cur.idx)
	})
	if err != nil {
		return nil, err
	}
	h.log.Info("artifact store put", "store", st.Name, "created", created, "allowed_principals", strings.Join(principals, ","))
	return &smapi.PutArtifactStoreOutput{Created: created}, nil
}

func describeStore(s *records.ArtifactStore) smapi.DescribeArtifactStoreOutput {
	return smapi.DescribeArtifactStoreOutput{ArtifactStore: s.Settings, AllowedPrincipals: s.AllowedPrincipals, CreationTime: smapi.NewTime(s.CreationTime)}
}

// unknownStore answers alike for a store that does not exist and one the
// caller may not name, so a caller learns nothing of stores it may not use.
func unknownStore(path, name string) *apiError {
	return validationf("%s: artifact store %q does not exist or this caller may not use it; an operator creates stores and allows principals to name them (serai store put).", path, name)
}

// visibleStore loads a store the caller may name.
func (h *Handler) visibleStore(ctx context.Context, path, name string) (loaded[records.ArtifactStore], error) {
	s, err := load[records.ArtifactStore](ctx, h.cfg.Store, records.KindStore, name)
	if errors.Is(err, records.ErrNotFound) {
		return s, unknownStore(path, name)
	}
	if err != nil {
		return s, err
	}
	if !h.isOperator(ctx) && !s.v.Allows(principal(ctx)) {
		h.log.Info("artifact store refused to a principal it does not allow", "store", name, "principal", principal(ctx))
		return s, unknownStore(path, name)
	}
	return s, nil
}

func (h *Handler) describeArtifactStore(ctx context.Context, in *smapi.DescribeArtifactStoreInput) (*smapi.DescribeArtifactStoreOutput, error) {
	var f fieldErrors
	f.name("name", in.Name)
	if err := f.err(); err != nil {
		return nil, err
	}
	s, err := h.visibleStore(ctx, "name", in.Name)
	if err != nil {
		return nil, err
	}
	out := describeStore(s.v)
	return &out, nil
}

func (h *Handler) listArtifactStores(ctx context.Context, _ *smapi.ListArtifactStoresInput) (*smapi.ListArtifactStoresOutput, error) {
	all, _, err := records.List[records.ArtifactStore](ctx, h.cfg.Store, records.KindStore)
	if err != nil {
		return nil, err
	}
	out := &smapi.ListArtifactStoresOutput{ArtifactStores: []smapi.DescribeArtifactStoreOutput{}}
	op := h.isOperator(ctx)
	for _, s := range all {
		if op || s.Allows(principal(ctx)) {
			out.ArtifactStores = append(out.ArtifactStores, describeStore(s))
		}
	}
	return out, nil
}

// deleteArtifactStore refuses (ResourceInUse) while a model or endpoint
// config names the store: the reconciler reads the record whenever it
// compiles a generation or writes a model's Vault policy. A CreateModel
// naming the store concurrently touches the record, so one of the two
// fails its check-and-set and decides again.
func (h *Handler) deleteArtifactStore(ctx context.Context, in *smapi.DeleteArtifactStoreInput) (*struct{}, error) {
	if err := h.requireOperator(ctx, "DeleteArtifactStore"); err != nil {
		return nil, err
	}
	var f fieldErrors
	f.name("name", in.Name)
	if err := f.err(); err != nil {
		return nil, err
	}
	err := retry(ctx, func() error {
		s, err := load[records.ArtifactStore](ctx, h.cfg.Store, records.KindStore, in.Name)
		if errors.Is(err, records.ErrNotFound) {
			return unknownStore("name", in.Name)
		}
		if err != nil {
			return err
		}
		models, _, err := records.List[records.Model](ctx, h.cfg.Store, records.KindModel)
		if err != nil {
			return err
		}
		for _, m := range models {
			if x := m.Spec.Serai; x != nil && x.ArtifactStore != nil && x.ArtifactStore.Name == in.Name {
				return inUsef("Cannot delete artifact store %q: model %q names it. Delete the model first.", in.Name, m.Name)
			}
		}
		cfgs, _, err := records.List[records.EndpointConfig](ctx, h.cfg.Store, records.KindEndpointConfig)
		if err != nil {
			return err
		}
		for _, c := range cfgs {
			if x := c.Spec.Serai; x != nil && x.DataCaptureStore != nil && x.DataCaptureStore.Name == in.Name {
				return inUsef("Cannot delete artifact store %q: endpoint configuration %q captures data to it. Delete the configuration first.", in.Name, c.Name)
			}
		}
		return h.cfg.Store.Delete(ctx, records.KindStore, in.Name, s.idx)
	})
	if err != nil {
		return nil, err
	}
	h.log.Info("artifact store deleted", "store", in.Name)
	return &struct{}{}, nil
}

// storeMember refuses every member of a request's store object but
// Name: a caller names an operator's store and never defines one (its
// endpoint or Vault path would otherwise choose whose keys the model's
// fetch task reads).
func (f *fieldErrors) storeMember(path string, st *smapi.ArtifactStore) {
	if st == nil {
		return
	}
	const why = "Member must be absent: artifact stores are operator-owned; name one with Name only (serai store list)"
	if st.Endpoint != "" {
		f.bad(path+".endpoint", st.Endpoint, why)
	}
	if st.Region != "" {
		f.bad(path+".region", st.Region, why)
	}
	if st.PathStyle {
		f.bad(path+".pathStyle", true, why)
	}
	if st.Vault != nil {
		f.bad(path+".vault", "{...}", why)
	}
	f.name(path+".name", st.Name)
}

// storeRefs are the store records a request relies on, loaded once each,
// for validation (their settings) and for touches (so a concurrent
// DeleteArtifactStore fails its check-and-set).
type storeRefs struct {
	h      *Handler
	loaded map[string]loaded[records.ArtifactStore]
}

func (h *Handler) newStoreRefs() *storeRefs {
	return &storeRefs{h: h, loaded: map[string]loaded[records.ArtifactStore]{}}
}

// named loads a store the caller names itself: it must allow the caller.
func (r *storeRefs) named(ctx context.Context, path string, st *smapi.ArtifactStore) error {
	if st == nil || st.Name == "" {
		return nil
	}
	s, err := r.h.visibleStore(ctx, path, st.Name)
	if err != nil {
		return err
	}
	r.loaded[st.Name] = s
	return nil
}

// of loads the store of a model the request refers to; a missing one is
// left for validation to report.
func (r *storeRefs) of(ctx context.Context, st *smapi.ArtifactStore) error {
	if st == nil || st.Name == "" {
		return nil
	}
	if _, ok := r.loaded[st.Name]; ok {
		return nil
	}
	s, err := load[records.ArtifactStore](ctx, r.h.cfg.Store, records.KindStore, st.Name)
	if errors.Is(err, records.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	r.loaded[st.Name] = s
	return nil
}

func (r *storeRefs) settings() []*smapi.ArtifactStore {
	out := make([]*smapi.ArtifactStore, 0, len(r.loaded))
	for _, n := range jobspec.SortedNames(r.loaded) {
		s := r.loaded[n].v.Settings
		out = append(out, &s)
	}
	return out
}

func (r *storeRefs) touches() []records.TxnOp {
	out := make([]records.TxnOp, 0, len(r.loaded))
	for _, n := range jobspec.SortedNames(r.loaded) {
		out = append(out, r.loaded[n].touch())
	}
	return out
}

// storeCredentials is where Vault keeps a store's keys.
func storeCredentials(st *smapi.ArtifactStore) policies.StoreCredentials {
	c := policies.StoreCredentials{Store: st.Name}
	if v := st.Vault; v != nil {
		c.KVMount, c.KVPath, c.AWSMount, c.AWSRole = v.KVMount, v.KVPath, v.AWSMount, v.AWSRole
	}
	return c
}

// storesOf is the store settings the given models and config rely on,
// for validating an endpoint against them (a store missing is reported
// by validation).
func (h *Handler) storesOf(ctx context.Context, models []loaded[records.Model], cfg *smapi.CreateEndpointConfigInput) ([]*smapi.ArtifactStore, error) {
	r := h.newStoreRefs()
	for _, m := range models {
		if x := m.v.Spec.Serai; x != nil {
			if err := r.of(ctx, x.ArtifactStore); err != nil {
				return nil, err
			}
		}
	}
	if cfg != nil && cfg.Serai != nil {
		if err := r.of(ctx, cfg.Serai.DataCaptureStore); err != nil {
			return nil, err
		}
	}
	return r.settings(), nil
}

// PutStores puts stores from the server's own configuration (serai
// server --stores), as an operator: whoever writes the server's config is
// one. Each store is put in turn; the first refusal stops it.
func (h *Handler) PutStores(ctx context.Context, stores []smapi.PutArtifactStoreInput) error {
	ctx = context.WithValue(ctx, configOperatorKey{}, true)
	for i := range stores {
		if _, err := h.putArtifactStore(ctx, &stores[i]); err != nil {
			return fmt.Errorf("artifact store %q: %w", stores[i].ArtifactStore.Name, err)
		}
	}
	return nil
}

// configOperatorKey marks a call from the server's own configuration.
type configOperatorKey struct{}
