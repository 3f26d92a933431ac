package policies

import (
	"context"
	"errors"
	"fmt"
	"github.com/seraihq/serai/contract"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/hashicorp/go-hclog"
	vaultapi "github.com/hashicorp/vault/api"

	"github.com/seraihq/serai/internal/names"
)

// Vault names shared with the compiler and the fetch task (docs/contracts.md).
const (
	// JWTAuthMount is where Nomad workload identities log in.
	JWTAuthMount = "jwt-nomad"
	// WorkloadAudience is the aud of the identity the fetch task presents.
	WorkloadAudience = "vault.io"
	// FetchTask is the only task a model role admits.
	FetchTask = "fetch-model"
	// ModelPolicyPrefix starts every per-model policy and role name.
	ModelPolicyPrefix = contract.ModelPolicyPrefix
	// DefaultKVMount is the KV v2 mount store keys live in unless the
	// store names another.
	DefaultKVMount = "secret"
	// DefaultAWSMount is the AWS secrets engine mount when a store names a
	// role but no mount.
	DefaultAWSMount = "aws"
	// TokenPeriod lets Nomad keep renewing the fetch task's token while the
	// task runs (Nomad's recommended setting for workload roles) without
	// giving it any fixed long lifetime.
	TokenPeriod = "30m"
)

// segmentPattern is what a Vault mount or path segment may hold here. It
// excludes the policy glob characters "*" and "+": a store path containing
// them would grant read on many paths, not one.
var segmentPattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`)

// namespacePattern is Nomad's rule for namespace names; it holds no glob
// character, so a role bound with "glob" claims matches one namespace.
var namespacePattern = regexp.MustCompile(`^[a-zA-Z0-9-]{1,128}$`)

// StoreCredentials says where Vault keeps one artifact store's keys: KV v2
// (KVMount, KVPath) or the AWS secrets engine (AWSMount, AWSRole).
type StoreCredentials struct {
	// Store is the artifact store's name; it only labels the policy.
	Store    string
	KVMount  string
	KVPath   string
	AWSMount string
	AWSRole  string
}

// KVStore is the contract's default location for a store's keys:
// secret/serai/stores/<store>.
func KVStore(store string) StoreCredentials {
	return StoreCredentials{Store: store}
}

// Path is the Vault API path the fetch task's template reads, and the only
// path the model's policy grants. Defaults match the spec's (jobspec):
// AWS engine mount "aws", KV mount "secret", KV path serai/stores/<store>.
func (s StoreCredentials) Path() (string, error) {
	switch {
	case s.AWSRole != "" && s.KVPath != "":
		return "", fmt.Errorf("store %q: credentials must come from KV or the AWS secrets engine, not both", s.Store)
	case s.AWSRole != "":
		mount := s.AWSMount
		if mount == "" {
			mount = DefaultAWSMount
		}
		if err := checkPath("aws_mount", mount); err != nil {
			return "", err
		}
		if err := checkPath("aws_role", s.AWSRole); err != nil {
			return "", err
		}
		if strings.Contains(s.AWSRole, "/") {
			return "", fmt.Errorf("aws_role %q: a role name has no '/'", s.AWSRole)
		}
		return mount + "/creds/" + s.AWSRole, nil
	case s.AWSMount != "":
		return "", fmt.Errorf("store %q: aws_mount is set but aws_role is not", s.Store)
	}
	mount, path := s.KVMount, s.KVPath
	if mount == "" {
		mount = DefaultKVMount
	}
	if path == "" {
		if err := checkName("artifact store", s.Store); err != nil {
			return "", fmt.Errorf("no kv_path, and the default serai/stores/<store> needs a valid store name: %w", err)
		}
		path = "serai/stores/" + s.Store
	}
	if err := checkPath("kv_mount", mount); err != nil {
		return "", err
	}
	if err := checkPath("kv_path", path); err != nil {
		return "", err
	}
	return mount + "/data/" + path, nil
}

func checkPath(field, p string) error {
	if p == "" {
		return fmt.Errorf("%s is empty", field)
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "." || seg == ".." || !segmentPattern.MatchString(seg) {
			return fmt.Errorf("%s %q: each '/'-separated part must be letters, digits, '_', '.' or '-' (no globs, no empty parts)", field, p)
		}
	}
	return nil
}

func checkName(kind, name string) error {
	if !names.Valid(name) {
		return fmt.Errorf("%s name %q is not valid (letters, digits and '-', at most 63, starting and ending with a letter or digit)", kind, name)
	}
	return nil
}

// PolicyName is the per-model Vault policy.
func PolicyName(model string) string { return ModelPolicyPrefix + model }

// RoleName is the per-model JWT role; the compiler puts it in the fetch
// task's vault { role = ... }.
func RoleName(model string) string { return ModelPolicyPrefix + model }

// JobIDPattern matches every deployment generation's Nomad job of an
// endpoint (contract.JobIDGlob; contract.JobID says why the dot).
//
// Vault globs have only "*", so the pattern for endpoint "churn" also
// matches the jobs of an endpoint named "churn-gold". serai itself never
// crosses them (the compiler picks each task's role), but a person allowed
// to submit Nomad jobs in serai's namespace could; docs/security.md says so.
func JobIDPattern(endpoint string) string { return contract.JobIDGlob(endpoint) }

// ModelPolicy is the policy text for a model: read on exactly its store's
// credential path, nothing else.
func ModelPolicy(model string, store StoreCredentials) (string, error) {
	if err := checkName("model", model); err != nil {
		return "", err
	}
	p, err := store.Path()
	if err != nil {
		return "", err
	}
	label := ""
	if store.Store != "" {
		label = fmt.Sprintf(" (artifact store %q)", store.Store)
	}
	return fmt.Sprintf(`# serai: least-privilege policy for model %q%s.
# Written by serai on CreateModel/CreateEndpoint; edits here are overwritten.
path %q {
  capabilities = ["read"]
}
`, model, label, p), nil
}

// DefaultNamespace is Nomad's own default namespace, where serai's jobs
// run unless the server is given another (serai server --namespace).
const DefaultNamespace = "default"

// RoleOptions adjusts the JWT role beyond the contract's fixed parts.
type RoleOptions struct {
	// Namespace is the Nomad namespace of serai's jobs; every role binds
	// the nomad_namespace claim to it (empty: DefaultNamespace). Nomad job
	// IDs are only unique per namespace, so without it a job of the same
	// ID in any other namespace could log in with the model's role.
	Namespace string
}

func (o RoleOptions) withDefaults() RoleOptions {
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	return o
}

// ModelRole is the JWT auth role for a model: it admits only the fetch-model
// task of the given endpoints' jobs in serai's namespace, presenting a
// Nomad workload identity for Vault, and grants only the model's policy. It refuses an empty
// endpoint list: a role without job bindings would admit every workload
// in the cluster.
func ModelRole(model string, endpoints []string, opts RoleOptions) (map[string]any, error) {
	if err := checkName("model", model); err != nil {
		return nil, err
	}
	if len(endpoints) == 0 {
		return nil, errors.New("a model role needs at least one endpoint to bind to")
	}
	jobs := make([]string, 0, len(endpoints))
	for _, e := range endpoints {
		if err := checkName("endpoint", e); err != nil {
			return nil, err
		}
		jobs = append(jobs, JobIDPattern(e))
	}
	sort.Strings(jobs)
	jobs = slices.Compact(jobs)
	opts = opts.withDefaults()
	if !namespacePattern.MatchString(opts.Namespace) {
		return nil, fmt.Errorf("namespace %q is not a Nomad namespace name (letters, digits and '-', at most 128; no globs)", opts.Namespace)
	}
	claims := map[string]any{
		"nomad_namespace": []string{opts.Namespace},
		"nomad_job_id":    jobs,
		"nomad_task":      []string{FetchTask},
	}
	return map[string]any{
		"role_type":               "jwt",
		"bound_audiences":         []string{WorkloadAudience},
		"bound_claims_type":       "glob",
		"bound_claims":            claims,
		"user_claim":              "/nomad_job_id",
		"user_claim_json_pointer": true,
		"claim_mappings": map[string]string{
			"nomad_namespace": "nomad_namespace",
			"nomad_job_id":    "nomad_job_id",
			"nomad_task":      "nomad_task",
		},
		"token_type":             "service",
		"token_policies":         []string{PolicyName(model)},
		"token_period":           TokenPeriod,
		"token_explicit_max_ttl": 0,
	}, nil
}

// ServerPolicy is what the serai server's own Vault token needs to manage
// model policies and roles, and nothing more: it cannot read any store's
// credentials.
func ServerPolicy(jwtMount string) string {
	if jwtMount == "" {
		jwtMount = JWTAuthMount
	}
	return fmt.Sprintf(`# serai server: manage per-model policies and roles only.
path "sys/policies/acl/%[1]s*" {
  capabilities = ["create", "read", "update", "delete"]
}
path "sys/policies/acl" {
  capabilities = ["list"]
}
path "auth/%[2]s/role/%[1]s*" {
  capabilities = ["create", "read", "update", "delete"]
}
`, ModelPolicyPrefix, jwtMount)
}

// Logical is the part of *vaultapi.Logical the writer uses; tests swap in
// a fake to exercise the decisions without a server.
type Logical interface {
	ReadWithContext(ctx context.Context, path string) (*vaultapi.Secret, error)
	ListWithContext(ctx context.Context, path string) (*vaultapi.Secret, error)
	WriteWithContext(ctx context.Context, path string, data map[string]any) (*vaultapi.Secret, error)
	DeleteWithContext(ctx context.Context, path string) (*vaultapi.Secret, error)
}

// VaultWriter keeps per-model policies and roles in Vault. The server calls
// it on CreateModel/CreateEndpoint/DeleteModel; `serai setup vault` uses its
// JWT auth planning.
type VaultWriter struct {
	Vault Logical
	// Mount is the JWT auth mount; empty means JWTAuthMount.
	Mount string
	Role  RoleOptions
	Log   hclog.Logger
}

// NewVaultWriter writes through client's token.
func NewVaultWriter(client *vaultapi.Client) *VaultWriter {
	return &VaultWriter{Vault: client.Logical()}
}

func (w *VaultWriter) mount() string {
	if w.Mount == "" {
		return JWTAuthMount
	}
	return strings.Trim(w.Mount, "/")
}

func (w *VaultWriter) log() hclog.Logger {
	if w.Log == nil {
		return hclog.NewNullLogger()
	}
	return w.Log
}

func policyPath(model string) string { return "sys/policies/acl/" + PolicyName(model) }

func (w *VaultWriter) rolePath(model string) string {
	return "auth/" + w.mount() + "/role/" + RoleName(model)
}

// EnsureModel makes Vault match what the model needs: its policy, and a
// role bound to the endpoints that use it. endpoints is the complete list,
// not a delta; with none (a model no endpoint uses yet, or any more) the
// policy stays and the role is removed, so no job can log in for it.
func (w *VaultWriter) EnsureModel(ctx context.Context, model string, store StoreCredentials, endpoints []string) error {
	policy, err := ModelPolicy(model, store)
	if err != nil {
		return err
	}
	var role map[string]any
	if len(endpoints) > 0 {
		if role, err = ModelRole(model, endpoints, w.Role); err != nil {
			return err
		}
	}
	if _, err := w.Vault.WriteWithContext(ctx, policyPath(model), map[string]any{"policy": policy}); err != nil {
		return vaultErr("writing policy "+PolicyName(model), err)
	}
	if role == nil {
		if _, err := w.Vault.DeleteWithContext(ctx, w.rolePath(model)); err != nil && !isNotFound(err) {
			return vaultErr("removing role "+RoleName(model), err)
		}
		w.log().Info("model policy written; no endpoint uses the model, so it has no role", "model", model)
		return nil
	}
	if _, err := w.Vault.WriteWithContext(ctx, w.rolePath(model), role); err != nil {
		if isNotFound(err) {
			return fmt.Errorf("writing role %s: no JWT auth method at auth/%s (run `serai setup vault --apply`): %w", RoleName(model), w.mount(), err)
		}
		return vaultErr("writing role "+RoleName(model)+" at auth/"+w.mount(), err)
	}
	w.log().Info("model policy and role written", "model", model, "endpoints", strings.Join(endpoints, ","))
	return nil
}

// RemoveModel deletes the model's role and policy. Each policy belongs to
// one model, so removing the model removes the last user of the policy.
// Removing what is already gone is not an error.
func (w *VaultWriter) RemoveModel(ctx context.Context, model string) error {
	if err := checkName("model", model); err != nil {
		return err
	}
	// Role first: once it is gone nobody can obtain a token naming the policy.
	if _, err := w.Vault.DeleteWithContext(ctx, w.rolePath(model)); err != nil && !isNotFound(err) {
		return vaultErr("removing role "+RoleName(model), err)
	}
	if _, err := w.Vault.DeleteWithContext(ctx, policyPath(model)); err != nil && !isNotFound(err) {
		return vaultErr("removing policy "+PolicyName(model), err)
	}
	w.log().Info("model policy and role removed", "model", model)
	return nil
}

// ModelAccess is what Vault holds for one model.
type ModelAccess struct {
	Policy string // policy text; empty when absent
	// Role fields; HasRole is false when there is no role.
	HasRole       bool
	JobIDs        []string
	Tasks         []string
	Namespaces    []string
	TokenPolicies []string
	Audiences     []string
}

// ReadModel reads back the model's policy and role.
func (w *VaultWriter) ReadModel(ctx context.Context, model string) (*ModelAccess, error) {
	if err := checkName("model", model); err != nil {
		return nil, err
	}
	out := &ModelAccess{}
	s, err := w.Vault.ReadWithContext(ctx, policyPath(model))
	if err != nil && !isNotFound(err) {
		return nil, vaultErr("reading policy "+PolicyName(model), err)
	}
	if s != nil {
		out.Policy, _ = s.Data["policy"].(string)
	}
	s, err = w.Vault.ReadWithContext(ctx, w.rolePath(model))
	if err != nil && !isNotFound(err) {
		return nil, vaultErr("reading role "+RoleName(model), err)
	}
	if s == nil {
		return out, nil
	}
	out.HasRole = true
	out.TokenPolicies = stringList(s.Data["token_policies"])
	out.Audiences = stringList(s.Data["bound_audiences"])
	if claims, ok := s.Data["bound_claims"].(map[string]any); ok {
		out.JobIDs = stringList(claims["nomad_job_id"])
		out.Tasks = stringList(claims["nomad_task"])
		out.Namespaces = stringList(claims["nomad_namespace"])
	}
	return out, nil
}

// ListModels returns the models that have a serai policy in Vault, so a
// reconciler can remove those whose model is gone.
func (w *VaultWriter) ListModels(ctx context.Context) ([]string, error) {
	s, err := w.Vault.ListWithContext(ctx, "sys/policies/acl")
	if err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, vaultErr("listing policies", err)
	}
	var out []string
	if s != nil {
		for _, name := range stringList(s.Data["keys"]) {
			if m, ok := strings.CutPrefix(name, ModelPolicyPrefix); ok {
				out = append(out, m)
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// stringList reads a Vault list value, which arrives as []any (JSON) or as a
// single string when the role was written with one.
func stringList(v any) []string {
	switch t := v.(type) {
	case string:
		return []string{t}
	case []string:
		return t
	case []any:
		out := make([]string, 0, len(t))
		for _, x := range t {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

func isNotFound(err error) bool {
	var re *vaultapi.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusNotFound
}

func vaultErr(what string, err error) error {
	var re *vaultapi.ResponseError
	if errors.As(err, &re) && re.StatusCode == http.StatusForbidden {
		return fmt.Errorf("%s: Vault denied it (403): give serai's token the policy from `serai setup vault` (ServerPolicy): %w", what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}
