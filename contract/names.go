package contract

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/seraihq/serai/internal/names"
)

// RouterServiceName is the Consul service every router registers as.
const RouterServiceName = "serai-router"

// RouterMetaScheme is the service meta key of a router's registration that
// says how to reach it: "https" when it serves TLS, "http" otherwise.
// Clients and the control plane's metric scraping read it.
const RouterMetaScheme = "scheme"

// ServicePrefix starts every endpoint's Consul service name.
const ServicePrefix = "serai-"

// ServiceName is the Consul service every instance of an endpoint joins.
func ServiceName(endpoint string) string { return ServicePrefix + endpoint }

// Instance tags the compiler writes on each model instance's service and
// routers parse. Routing reads tags (Nomad-native services carry no meta);
// trust reads the service meta below.
const (
	TagVariant    = "variant="
	TagGeneration = "generation="
	TagModel      = "model="
	TagShadow     = "shadow=true"
)

// InstanceTags is what an instance's tags say about it.
type InstanceTags struct {
	Variant    string
	Generation int
	Model      string
	Shadow     bool
}

// Format returns the tags in the order the compiler writes them.
func (t InstanceTags) Format() []string {
	out := []string{
		TagVariant + t.Variant,
		TagGeneration + strconv.Itoa(t.Generation),
		TagModel + t.Model,
	}
	if t.Shadow {
		out = append(out, TagShadow)
	}
	return out
}

// ParseTags reads the serai tags of a service instance. ok is false when the
// variant or generation tag is missing or malformed: such an instance is not
// routable. Tags it does not know are ignored (operators add their own).
func ParseTags(tags []string) (t InstanceTags, ok bool) {
	for _, tag := range tags {
		switch {
		case strings.HasPrefix(tag, TagVariant):
			t.Variant = tag[len(TagVariant):]
		case strings.HasPrefix(tag, TagGeneration):
			n, good := parseGeneration(tag[len(TagGeneration):])
			if !good {
				return InstanceTags{}, false
			}
			t.Generation = n
		case strings.HasPrefix(tag, TagModel):
			t.Model = tag[len(TagModel):]
		case tag == TagShadow:
			t.Shadow = true
		}
	}
	return t, names.Valid(t.Variant) && t.Generation > 0
}

// parseGeneration accepts 1 to 9 decimal digits and nothing else (no sign,
// no spaces), so a tag has exactly one spelling.
func parseGeneration(s string) (int, bool) {
	if s == "" || len(s) > 9 {
		return 0, false
	}
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, n > 0
}

// JobID names the Nomad job of one endpoint generation. The "." before the
// generation cannot occur in a name, so the Vault role glob for endpoint e,
// "serai-e.g*", matches e's jobs and never those of an endpoint whose name
// merely starts with "e-g" (with "-g" it would: "serai-churn-g*" matches
// "serai-churn-gold-g1").
func JobID(endpoint string, generation int) string {
	return fmt.Sprintf("%s%s.g%d", ServicePrefix, endpoint, generation)
}

// JobIDGlob matches every generation's job of an endpoint, in Vault's glob
// syntax (bound_claims_type "glob").
func JobIDGlob(endpoint string) string { return ServicePrefix + endpoint + ".g*" }

// ParseJobID is JobID's inverse; ok is false for any other job.
func ParseJobID(id string) (endpoint string, generation int, ok bool) {
	rest, found := strings.CutPrefix(id, ServicePrefix)
	if !found {
		return "", 0, false
	}
	i := strings.LastIndex(rest, ".g")
	if i < 0 {
		return "", 0, false
	}
	endpoint = rest[:i]
	generation, good := parseGeneration(rest[i+2:])
	if !good || !names.Valid(endpoint) {
		return "", 0, false
	}
	return endpoint, generation, true
}

// Service meta the compiler writes on each model instance's Consul service.
// A router uses an instance only when its meta names the job ID and the
// generation of a generation the routing table lists (JobID of the
// endpoint and that generation), so a service registered under
// serai-<endpoint> by anything but that generation's Nomad job takes no
// traffic. The meta is not secret (anyone who can read the catalog sees
// it); stopping a forged registration is the job of Consul ACLs
// (docs/security.md). Consul meta keys allow only letters, digits, "_"
// and "-", hence "_" where the job meta above uses ".".
const (
	ServiceMetaJobID      = "serai_job"
	ServiceMetaGeneration = "serai_generation"
	ServiceMetaEndpoint   = "serai_endpoint"
)

// ServiceMeta is the service meta of endpoint's instances in generation.
func ServiceMeta(endpoint string, generation int) map[string]string {
	return map[string]string{
		ServiceMetaJobID:      JobID(endpoint, generation),
		ServiceMetaGeneration: strconv.Itoa(generation),
		ServiceMetaEndpoint:   endpoint,
	}
}

// TrustedMeta reports whether an instance of endpoint whose tags say
// generation carries the meta ServiceMeta(endpoint, generation) writes.
// It returns the reason when not, for the router's log.
func TrustedMeta(endpoint string, generation int, meta map[string]string) (ok bool, reason string) {
	want := ServiceMeta(endpoint, generation)
	for _, k := range []string{ServiceMetaJobID, ServiceMetaGeneration, ServiceMetaEndpoint} {
		got, found := meta[k]
		if !found {
			return false, "service meta " + k + " is missing"
		}
		if got != want[k] {
			return false, fmt.Sprintf("service meta %s is %q, want %q", k, got, want[k])
		}
	}
	return true, ""
}

// TrustInstance says whether a passing instance of endpoint's service may
// be routed to, or counted as healthy, and what its tags say. ownChecks is
// how many health checks of its own (not its node's) it has: Consul
// reports a service with no checks as passing, but nothing has seen it
// answer. why names the first reason it is not trusted.
func TrustInstance(endpoint string, tags []string, meta map[string]string, ownChecks int) (t InstanceTags, why string, ok bool) {
	t, ok = ParseTags(tags)
	if !ok {
		return InstanceTags{}, "no valid variant/generation tags", false
	}
	if ok, why := TrustedMeta(endpoint, t.Generation, meta); !ok {
		return InstanceTags{}, why, false
	}
	if ownChecks == 0 {
		return InstanceTags{}, "no health check of its own", false
	}
	return t, "", true
}

// ModelPolicyPrefix starts every per-model Vault policy and JWT role name.
const ModelPolicyPrefix = "serai-model-"

// VaultRole is the JWT role, and the policy, of a model's fetch task.
func VaultRole(model string) string { return ModelPolicyPrefix + model }

// Meta keys on every compiled job and group, read by the control plane and
// shown in the Nomad UI.
const (
	MetaEndpoint   = "serai.endpoint"
	MetaConfig     = "serai.endpoint_config"
	MetaGeneration = "serai.generation"
	MetaModels     = "serai.models"
	MetaStrategy   = "serai.deployment_strategy"
	MetaVariant    = "serai.variant"
	MetaModel      = "serai.model"
	MetaWeight     = "serai.weight"
	MetaShadow     = "serai.shadow"
)
